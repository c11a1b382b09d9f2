"""``python -m hubtools.hub.server`` is ``hubtools hub serve``."""

from hubtools.hub.server.cli import serve_command

if __name__ == "__main__":
    serve_command(prog_name="python -m hubtools.hub.server")
