"""mg-demo installs and imports on its own. mg_demo sits on top of everything; it must declare mg-train and, through it, the rest."""

FORBIDDEN = []
SIBLINGS = ["mg-train", "mg-tae", "mg-transformer", "mg-data", "mg-parallel"]


def test_installs_and_imports_standalone(check_standalone):
    check_standalone("mg-demo", forbidden=FORBIDDEN, siblings=SIBLINGS)
