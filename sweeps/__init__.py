"""What gets run: machine profiles, the op catalogue, suites, vector expansion, host validation,
the msgpack vector codec and PCC."""
