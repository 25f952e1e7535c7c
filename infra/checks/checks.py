#!/usr/bin/env python3
"""Confab infrastructure checks that need more than a linter (run by infra/checks/run.sh).

Subcommands:
  taskdefs            validate infra/ecs/*.json against ECS RegisterTaskDefinition (botocore)
  ecs-render [--write] render infra/ecs/*.json from the CloudFormation task definitions;
                      without --write, fail when the checked-in files drifted
  metrics             dashboards, alarms, autoscaling and the collector config may only use
                      metric names from services/telemetry/src/metrics_names.rs or AWS metrics
  grafana             dashboards and provisioning files parse and are consistent
  adot                the collector config in the template parses, fits an SSM parameter and
                      wires only components it defines
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
TEMPLATE = INFRA / "aws" / "confab.yaml"
ECS_DIR = INFRA / "ecs"
GRAFANA = INFRA / "grafana"
METRICS_RS = ROOT / "services" / "telemetry" / "src" / "metrics_names.rs"

SKIPPED = 3  # nothing to check yet (run.sh reports "skip"; its `required` check guards absence)
CONFAB_NAMESPACE = "Confab"
# AWS-published metrics dashboards and alarms may use besides Confab's own.
AWS_NAMESPACES = {"AWS/ECS", "ECS/ContainerInsights", "AWS/ApplicationELB", "AWS/ElastiCache"}
# Values CloudFormation pseudo parameters take in rendered task definitions.
PSEUDO = {
    "AWS::Region": "AWS_REGION",
    "AWS::AccountId": "AWS_ACCOUNT_ID",
    "AWS::StackName": "CONFAB_STACK",
    "AWS::Partition": "AWS_PARTITION",
    "AWS::URLSuffix": "AWS_URL_SUFFIX",
}
# Keys whose values are free-form maps: keep their keys as written.
VERBATIM_KEYS = {"Options", "DockerLabels"}
TOKEN = re.compile(r"\bconfab_[a-z0-9_]+\b")


class Failures:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, msg: str) -> None:
        self.items.append(f"{where}: {msg}")

    def finish(self, what: str) -> int:
        for item in self.items:
            print(f"  {item}", file=sys.stderr)
        if self.items:
            print(f"{what}: {len(self.items)} problem(s)", file=sys.stderr)
            return 1
        return 0


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def load_template(path: Path = TEMPLATE) -> dict:
    from cfnlint.decode import decode  # short-form intrinsics (!Ref, !Sub) need cfn-lint's loader

    template, matches = decode(str(path))
    if matches or template is None:
        raise SystemExit(f"{rel(path)}: cannot parse: {[str(m) for m in matches]}")
    return _plain(template)


def _plain(node):
    """cfn-lint returns dict/str subclasses that carry line marks; turn them into builtins."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    return str(node)


def allowed_metrics() -> set[str]:
    text = METRICS_RS.read_text()
    names = set(re.findall(r'pub const [A-Z0-9_]+: &str = "(confab_[a-z0-9_]+)";', text))
    if not names:
        raise SystemExit(f"{rel(METRICS_RS)}: no `pub const X: &str = \"confab_...\"` lines found")
    return names


# ---------------------------------------------------------------- task definitions

def _placeholder(ref: str) -> str:
    if ref in PSEUDO:
        return "${" + PSEUDO[ref] + "}"
    return "${" + ref.replace(".", "") + "}"


def _resolve(node, where: str):
    """Turn CloudFormation intrinsics into ${Placeholder} strings that deploy fills in."""
    if isinstance(node, dict):
        if len(node) == 1:
            (key, value), = node.items()
            if key == "Ref":
                return _placeholder(value)
            if key == "Fn::GetAtt":
                parts = value if isinstance(value, list) else value.split(".", 1)
                return _placeholder(".".join(parts))
            if key == "Fn::Sub":
                if not isinstance(value, str):
                    raise SystemExit(f"{where}: Fn::Sub with a variable map is not renderable")
                return re.sub(r"\$\{([A-Za-z0-9:.]+)\}", lambda m: _placeholder(m.group(1)), value)
            if key == "Fn::Join":
                sep, items = value
                return sep.join(_resolve(i, where) for i in items)
            if key.startswith("Fn::"):
                raise SystemExit(f"{where}: {key} cannot be rendered to a static task definition")
        out = {}
        for k, v in node.items():
            api_key = k[:1].lower() + k[1:]
            if k in VERBATIM_KEYS and isinstance(v, dict):
                out[api_key] = {kk: _resolve(vv, where) for kk, vv in v.items()}
            else:
                out[api_key] = _resolve(v, where)
        return out
    if isinstance(node, list):
        return [_resolve(v, where) for v in node]
    return node


def render_task_definitions(template: dict) -> dict[str, dict]:
    rendered = {}
    for logical_id, res in template.get("Resources", {}).items():
        if res.get("Type") != "AWS::ECS::TaskDefinition":
            continue
        name = logical_id.removesuffix("TaskDefinition").lower()
        props = {k: v for k, v in res["Properties"].items() if k != "Tags"}
        rendered[name] = _resolve(props, logical_id)
    return rendered


def cmd_ecs_render(write: bool) -> int:
    fails = Failures()
    if not TEMPLATE.exists():
        return SKIPPED
    template = load_template()
    rendered = render_task_definitions(template)
    if not rendered:
        fails.add(rel(TEMPLATE), "no AWS::ECS::TaskDefinition resources")
    outputs = template.get("Outputs", {})
    for name, td in sorted(rendered.items()):
        text = json.dumps(td, indent=2, sort_keys=True) + "\n"
        path = ECS_DIR / f"{name}.json"
        if write:
            ECS_DIR.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        elif not path.exists():
            fails.add(rel(path), "missing; run `$HOME/.cache/confab/infra-venv/bin/python infra/checks/checks.py ecs-render --write`")
        elif path.read_text() != text:
            fails.add(rel(path), "differs from the task definition in the template; "
                      "run `$HOME/.cache/confab/infra-venv/bin/python infra/checks/checks.py ecs-render --write`")
        # deploy fills every placeholder from a stack output of the same name
        for ph in sorted(set(re.findall(r"\$\{([A-Za-z0-9_]+)\}", text))):
            if ph in PSEUDO.values():
                continue
            if ph not in outputs:
                fails.add(rel(path), f"placeholder ${{{ph}}} has no stack Output named {ph}")
    if write:
        for stale in ECS_DIR.glob("*.json"):
            if stale.stem not in rendered:
                stale.unlink()
    else:
        for extra in ECS_DIR.glob("*.json"):
            if extra.stem not in rendered:
                fails.add(rel(extra), "no task definition in the template renders to this file")
    return fails.finish("ecs-render")


def cmd_taskdefs() -> int:
    import botocore.session
    from botocore.validate import ParamValidator

    fails = Failures()
    model = botocore.session.get_session().get_service_model("ecs")
    shape = model.operation_model("RegisterTaskDefinition").input_shape
    files = sorted(ECS_DIR.glob("*.json"))
    if not files:
        return SKIPPED
    for path in files:
        try:
            params = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            fails.add(rel(path), f"invalid JSON: {e}")
            continue
        report = ParamValidator().validate(params, shape)
        if report.has_errors():
            for line in report.generate_report().splitlines():
                fails.add(rel(path), line)
        # what botocore cannot know: Fargate shapes and the things deploy relies on
        if params.get("networkMode") != "awsvpc":
            fails.add(rel(path), "networkMode must be awsvpc on Fargate")
        names = [c.get("name") for c in params.get("containerDefinitions", [])]
        if len(set(names)) != len(names):
            fails.add(rel(path), "duplicate container names")
        if path.stem not in names:
            fails.add(rel(path), f"needs a container named {path.stem!r} (deploy renders its image)")
        for c in params.get("containerDefinitions", []):
            if "logConfiguration" not in c:
                fails.add(rel(path), f"container {c.get('name')} has no logConfiguration")
        # what deploy registers: the file after infra/ecs/fill.py with every stack output set
        filled = _fill_like_deploy(path, fails)
        if filled is not None:
            report = ParamValidator().validate(filled, shape)
            if report.has_errors():
                for line in report.generate_report().splitlines():
                    fails.add(f"{rel(path)} (filled)", line)
    return fails.finish("taskdefs")


def _fill_like_deploy(path: Path, fails: Failures):
    import subprocess
    import tempfile

    if not TEMPLATE.exists():
        return None
    outputs = [{"OutputKey": k, "OutputValue": f"test-{k}"} for k in load_template().get("Outputs", {})]
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(outputs, f)
        f.flush()
        run = subprocess.run(
            [sys.executable, str(ECS_DIR / "fill.py"), "--outputs", f.name, "--stack", "confab",
             "--region", "eu-west-1", "--account", "123456789012", str(path)],
            capture_output=True, text=True)
    if run.returncode != 0:
        fails.add(rel(path), f"infra/ecs/fill.py failed: {run.stderr.strip()}")
        return None
    return json.loads(run.stdout)


# ---------------------------------------------------------------- metrics

def _walk_strings(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk_strings(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk_strings(v, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path, node


def _check_metric(fails, where, namespace, name, allowed):
    if isinstance(namespace, dict) or isinstance(name, dict):
        fails.add(where, "metric namespace/name must be literal strings")
        return
    if namespace == CONFAB_NAMESPACE:
        if name not in allowed:
            fails.add(where, f"metric {name!r} is not exported by Confab (metrics_names.rs)")
    elif namespace not in AWS_NAMESPACES:
        fails.add(where, f"namespace {namespace!r} is neither {CONFAB_NAMESPACE!r} nor an allowed AWS namespace")


def _panels(dashboard):
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows


def check_dashboard_metrics(path: Path, dashboard: dict, allowed: set[str], fails: Failures) -> None:
    for panel in _panels(dashboard):
        for i, target in enumerate(panel.get("targets", [])):
            where = f"{rel(path)} panel {panel.get('title')!r} target {i}"
            if target.get("queryMode", "Metrics") == "Metrics" and "namespace" in target:
                _check_metric(fails, where, target["namespace"], target.get("metricName"), allowed)
    for where, text in _walk_strings(dashboard):
        for token in TOKEN.findall(text):
            if token not in allowed:
                fails.add(f"{rel(path)}{where}", f"unknown metric {token!r}")


def check_template_metrics(path: Path, template: dict, allowed: set[str], fails: Failures) -> int:
    seen = 0
    for logical_id, res in template.get("Resources", {}).items():
        props = res.get("Properties", {})
        where = f"{rel(path)} {logical_id}"
        if res.get("Type") == "AWS::CloudWatch::Alarm":
            if "MetricName" in props:
                _check_metric(fails, where, props.get("Namespace"), props["MetricName"], allowed)
                seen += 1
            for m in props.get("Metrics", []):
                metric = m.get("MetricStat", {}).get("Metric")
                if metric:
                    _check_metric(fails, where, metric.get("Namespace"), metric.get("MetricName"), allowed)
                    seen += 1
        if res.get("Type") == "AWS::ApplicationAutoScaling::ScalingPolicy":
            custom = props.get("TargetTrackingScalingPolicyConfiguration", {}).get(
                "CustomizedMetricSpecification")
            if custom:
                _check_metric(fails, where, custom.get("Namespace"), custom.get("MetricName"), allowed)
                seen += 1
    for where, text in _walk_strings(template):
        for token in TOKEN.findall(text):
            if token not in allowed:
                fails.add(f"{rel(path)}{where}", f"unknown metric {token!r}")
    return seen


def cmd_metrics() -> int:
    fails = Failures()
    allowed = allowed_metrics()
    dashboards = sorted((GRAFANA / "dashboards").glob("*.json"))
    for path in dashboards:
        try:
            check_dashboard_metrics(path, json.loads(path.read_text()), allowed, fails)
        except json.JSONDecodeError as e:
            fails.add(rel(path), f"invalid JSON: {e}")
    seen = 0
    for path in sorted((INFRA / "aws").glob("*.yaml")):
        seen += check_template_metrics(path, load_template(path), allowed, fails)
    if TEMPLATE.exists() and seen == 0:
        fails.add(rel(TEMPLATE), "no alarms or scaling metrics found (is the check still looking in the right place?)")
    return fails.finish("metrics")


# ---------------------------------------------------------------- grafana

def cmd_grafana() -> int:
    import yaml

    fails = Failures()
    if not GRAFANA.exists():
        return SKIPPED
    ds_uids = set()
    for path in sorted((GRAFANA / "provisioning" / "datasources").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        for ds in doc.get("datasources", []):
            if not ds.get("uid"):
                fails.add(rel(path), f"datasource {ds.get('name')!r} needs a fixed uid for dashboards")
            ds_uids.add(ds.get("uid"))
    if not ds_uids:
        fails.add(rel(GRAFANA / "provisioning" / "datasources"), "no datasources provisioned")
    dash_paths = set()
    for path in sorted((GRAFANA / "provisioning" / "dashboards").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        for provider in doc.get("providers", []):
            dash_paths.add(provider.get("options", {}).get("path"))
    if not dash_paths:
        fails.add(rel(GRAFANA / "provisioning" / "dashboards"), "no dashboard providers")
    dashboards = sorted((GRAFANA / "dashboards").glob("*.json"))
    if not dashboards:
        fails.add(rel(GRAFANA / "dashboards"), "no dashboards")
    uids = {}
    for path in dashboards:
        try:
            dash = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            fails.add(rel(path), f"invalid JSON: {e}")
            continue
        for key in ("uid", "title", "panels", "schemaVersion"):
            if key not in dash:
                fails.add(rel(path), f"missing {key!r}")
        if dash.get("uid") in uids:
            fails.add(rel(path), f"uid {dash.get('uid')!r} also used by {uids[dash['uid']]}")
        uids[dash.get("uid")] = rel(path)
        ids = [p.get("id") for p in _panels(dash)]
        if len(ids) != len(set(ids)):
            fails.add(rel(path), "panel ids are not unique")
        for panel in _panels(dash):
            if panel.get("type") == "row":
                continue
            refs = [panel.get("datasource")] + [t.get("datasource") for t in panel.get("targets", [])]
            for ref in refs:
                if isinstance(ref, dict) and ref.get("uid") not in ds_uids:
                    fails.add(rel(path), f"panel {panel.get('title')!r} uses datasource {ref.get('uid')!r}, not provisioned")
            if not panel.get("targets"):
                fails.add(rel(path), f"panel {panel.get('title')!r} has no queries")
    return fails.finish("grafana")


# ---------------------------------------------------------------- collector config

def cmd_adot() -> int:
    import yaml

    fails = Failures()
    if not TEMPLATE.exists():
        return SKIPPED
    params = [(k, r) for k, r in load_template().get("Resources", {}).items()
              if r.get("Type") == "AWS::SSM::Parameter" and "adot" in k.lower()]
    if not params:
        fails.add(rel(TEMPLATE), "no ADOT collector config parameter")
    for logical_id, res in params:
        where = f"{rel(TEMPLATE)} {logical_id}"
        text = res["Properties"].get("Value")
        if not isinstance(text, str):
            fails.add(where, "Value must be a literal YAML string")
            continue
        if len(text.encode()) > 4096:
            fails.add(where, f"{len(text.encode())} bytes; a standard SSM parameter holds 4096")
        try:
            config = yaml.safe_load(text)
        except yaml.YAMLError as e:
            fails.add(where, f"invalid YAML: {e}")
            continue
        service = config.get("service", {})
        for ext in service.get("extensions", []):
            if ext not in config.get("extensions", {}):
                fails.add(where, f"extension {ext!r} is not defined")
        for name, pipeline in service.get("pipelines", {}).items():
            for kind in ("receivers", "processors", "exporters"):
                for component in pipeline.get(kind, []):
                    if component not in (config.get(kind) or {}):
                        fails.add(where, f"pipeline {name}: {kind[:-1]} {component!r} is not defined")
        emf = (config.get("exporters") or {}).get("awsemf", {})
        if emf.get("namespace") != CONFAB_NAMESPACE:
            fails.add(where, f"awsemf namespace must be {CONFAB_NAMESPACE!r}")
    return fails.finish("adot")


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "taskdefs":
        return cmd_taskdefs()
    if cmd == "ecs-render":
        return cmd_ecs_render(write="--write" in rest)
    if cmd == "metrics":
        return cmd_metrics()
    if cmd == "grafana":
        return cmd_grafana()
    if cmd == "adot":
        return cmd_adot()
    print(f"unknown subcommand {cmd!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
