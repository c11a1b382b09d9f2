"""Everything that talks to a Hub: the local server, cards, publishing, artifact folders."""
