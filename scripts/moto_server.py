"""moto's server, with one fix to its CloudFormation: an item of a list that resolves to
AWS::NoValue is removed from the list, as CloudFormation does (moto keeps it as null).
The stack adds its optional clamd sidecar to the task's containers that way. The testbed
(scripts/services) and the stack tests (tests/stack) run moto through this.

    python scripts/moto_server.py -H 127.0.0.1 -p PORT
"""

from typing import Any

from moto.cloudformation import parsing
from moto.server import main

_clean_json = parsing.clean_json


def clean_json(resource_json: Any, resources_map: Any) -> Any:
    if isinstance(resource_json, list):
        cleaned = (clean_json(item, resources_map) for item in resource_json)
        return [item for item in cleaned if item is not None]
    return _clean_json(resource_json, resources_map)


# The original's recursion looks the name up in its module, so it reaches this one too.
parsing.clean_json = clean_json

if __name__ == "__main__":
    main()
