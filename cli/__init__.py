"""The `dfkd` command: the one piece that knows every room (api, worker, core)."""
