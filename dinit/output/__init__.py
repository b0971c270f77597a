"""Program output: cutting pipes into lines, labelling them (JSON or prefix form), writing them (§4)."""
