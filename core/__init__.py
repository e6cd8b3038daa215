"""What the HTTP front (front/) and the job API (jobs/) share, below both of them.

The one error shape, the caller's identity, a checked request as a unit of work and how it runs on its runner.
Nothing here imports front/ or jobs/ (tests/unit/test_layering.py): service.py composes those two.
"""
