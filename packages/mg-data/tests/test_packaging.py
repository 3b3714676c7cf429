"""mg-data installs and imports on its own. mg_data must stay framework-free: no mindspore, no sibling packages."""

FORBIDDEN = ["mindspore", "gradio", "mg_tae", "mg_transformer", "mg_parallel", "mg_train", "mg_demo"]
SIBLINGS = []


def test_installs_and_imports_standalone(check_standalone):
    check_standalone("mg-data", forbidden=FORBIDDEN, siblings=SIBLINGS)
