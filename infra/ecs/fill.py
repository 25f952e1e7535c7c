#!/usr/bin/env python3
"""Fill the ${Placeholders} of a rendered task definition (infra/ecs/<service>.json).

Placeholders are the service stack's outputs (`aws cloudformation describe-stacks`) plus
AWS_REGION, AWS_ACCOUNT_ID, CONFAB_STACK, AWS_PARTITION and AWS_URL_SUFFIX. Standard library
only, so it runs on any CI runner:

  aws cloudformation describe-stacks --stack-name confab --query 'Stacks[0].Outputs' > outputs.json
  python3 infra/ecs/fill.py --outputs outputs.json --stack confab --region eu-west-1 \
      --account 123456789012 infra/ecs/gateway.json > taskdef.json

Fails (exit 1) naming every placeholder it cannot fill.
"""
import argparse
import json
import re
import sys

PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")


def fill(node, values, missing):
    if isinstance(node, dict):
        return {k: fill(v, values, missing) for k, v in node.items()}
    if isinstance(node, list):
        return [fill(v, values, missing) for v in node]
    if isinstance(node, str):
        def sub(m):
            if m.group(1) in values:
                return values[m.group(1)]
            missing.add(m.group(1))
            return m.group(0)
        return PLACEHOLDER.sub(sub, node)
    return node


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--outputs", required=True, help="JSON list of {OutputKey, OutputValue}")
    p.add_argument("--stack", required=True)
    p.add_argument("--region", required=True)
    p.add_argument("--account", required=True)
    p.add_argument("--partition", default="aws")
    p.add_argument("--url-suffix", default="amazonaws.com")
    p.add_argument("taskdef")
    a = p.parse_args()
    with open(a.outputs) as f:
        values = {o["OutputKey"]: o["OutputValue"] for o in json.load(f) or []}
    values.update(AWS_REGION=a.region, AWS_ACCOUNT_ID=a.account, CONFAB_STACK=a.stack,
                  AWS_PARTITION=a.partition, AWS_URL_SUFFIX=a.url_suffix)
    with open(a.taskdef) as f:
        taskdef = json.load(f)
    missing = set()
    filled = fill(taskdef, values, missing)
    if missing:
        print(f"{a.taskdef}: no stack output for: {', '.join(sorted(missing))}", file=sys.stderr)
        return 1
    json.dump(filled, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
