"""mg-train installs and imports on its own. mg_train composes the four model/data packages but never needs the web app."""

FORBIDDEN = ["gradio", "mg_demo"]
SIBLINGS = ["mg-tae", "mg-transformer", "mg-data", "mg-parallel"]


def test_installs_and_imports_standalone(check_standalone):
    check_standalone("mg-train", forbidden=FORBIDDEN, siblings=SIBLINGS)
