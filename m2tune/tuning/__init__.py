"""`m2tune tune` and `m2tune export`: search spaces, the Optuna study, its workers, the export.

    space_file -> space -> samplers -> tune (options, duplicates, orphans, storage)
        -> backends -> worker (parent) -> trial (child: validate, time) -> confirm -> summary
        -> export -> profiles/<gpu>/<kernel>.json;   check: `m2tune check` over profile files
"""
