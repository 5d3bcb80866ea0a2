"""``medtransfer advise``: which initialisation and recipe to use on the user's own data, within a time budget.

    advise(config_path, out, ...)  -> OUT/advice.json, OUT/advice.html and the trained pick in OUT/best

The pieces: ``candidates`` (what can be compared), ``features`` + ``rank`` (transferability without
fine-tuning), ``search`` (successive halving on train / validation only), ``workflow`` (the edge: runs the
steps, writes the files) and ``advice`` (the document it writes).
Importing the package imports nothing heavy, so the CLI can name it cheaply.
"""
