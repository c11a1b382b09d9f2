"""Local evaluate module (a package only so that wheels ship it; evaluate.load reads next_token.py)."""
