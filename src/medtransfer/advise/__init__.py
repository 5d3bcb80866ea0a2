"""``medtransfer advise``: which initialisation and recipe to use on the user's own data, within a time budget.

    advise(config_path, out, ...)  -> OUT/advice.json, OUT/advice.html and the trained pick in OUT/best

The pieces: ``candidates`` (what can be compared), ``features`` + ``rank`` (transferability without
fine-tuning), ``search`` (successive halving on train / validation only), ``workflow`` (the steps, from the
ranking to the final run and the learning curve), ``advice`` (the document they produce) and ``command``
(the edge: checks the arguments, runs the workflow, writes advice.json and advice.html).
Importing the package imports nothing heavy, so the CLI can name it cheaply.
"""
