"""Local evaluate module (a package only so that wheels ship it; evaluate.load reads accuracy.py)."""
