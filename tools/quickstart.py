"""The README's main job until `mg-train quickstart` exists: install check of all six packages.

Today the packages are skeletons, so the most complete job they can do is to import together in one
environment and report their versions. This script is replaced by `mg-train quickstart` (issue 8).
"""

import importlib

PACKAGES = ["mg_tae", "mg_transformer", "mg_data", "mg_parallel", "mg_train", "mg_demo"]


def main() -> None:
    for name in PACKAGES:
        module = importlib.import_module(name)
        print(f"{name:16s} {module.__version__}")
    print("All six mg packages import together. The training quickstart arrives with mg-train (issue 8).")


if __name__ == "__main__":
    main()
