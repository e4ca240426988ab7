"""The ``brain`` command, composed above the packages whose commands it gathers: the service's
(``serve``, ``migrate``), the workers' (``worker``, ``beat``), the benchmarks' (``bench``) and the
client's (``brains``, ``learn``, ``predict``, ``sleep``, ``job``, ``demo``).

Each of those packages only registers its own commands on the app it is given; none imports a
package above it (tests/test_layers.py checks the arrows).
"""
