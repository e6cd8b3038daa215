"""The public front's concerns beside its routes (service.py): errors, the HTTP edge, runner calls, the contract."""
