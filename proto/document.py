"""Writes docs/api.md, the gRPC API reference, from the .proto sources and their comments (``make proto``),
or checks it is current (``--check``, run by ``make test``).

Every service, method, message, field and enum of package apidevs.alerts.v1 is listed with the comment
written above it in the .proto file, so the reference says exactly what the contract says.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
PACKAGE_DIR = PROTO_ROOT / "apidevs" / "alerts" / "v1"
OUTPUT = PROTO_ROOT.parent / "docs" / "api.md"
PACKAGE = "apidevs.alerts.v1"

# Field and location numbers of descriptor.proto, as SourceCodeInfo paths use them.
_MESSAGE, _ENUM, _SERVICE = 4, 5, 6
_FIELD, _NESTED, _NESTED_ENUM, _METHOD, _ENUM_VALUE = 2, 3, 4, 2, 2

_SCALARS = {
    value: name.removeprefix("TYPE_").lower()
    for name, value in descriptor_pb2.FieldDescriptorProto.Type.items()
    if name not in ("TYPE_MESSAGE", "TYPE_ENUM", "TYPE_GROUP")
}


def _descriptors() -> descriptor_pb2.FileDescriptorSet:
    include = Path(protoc.__file__).parent / "_proto"
    sources = sorted(str(p.relative_to(PROTO_ROOT)) for p in PACKAGE_DIR.glob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        args = ["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{include}", "--include_source_info"]
        if protoc.main([*args, f"--descriptor_set_out={out}", *sources]) != 0:
            raise SystemExit("protoc failed")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _comments(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    found = {}
    for location in file.source_code_info.location:
        text = location.leading_comments.strip() or location.trailing_comments.strip()
        if text:
            found[tuple(location.path)] = " ".join(line.strip() for line in text.splitlines())
    return found


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _type(field: descriptor_pb2.FieldDescriptorProto, maps: dict[str, tuple[str, str]]) -> str:
    if field.type_name in maps:
        key, value = maps[field.type_name]
        return f"map<{key}, {value}>"
    name = (
        field.type_name.removeprefix(f".{PACKAGE}.").lstrip(".") if field.type_name else _SCALARS[field.type]
    )
    if field.type_name.startswith(f".{PACKAGE}."):
        name = f"[{name}](#{name.replace('.', '').lower()})"
    repeated = field.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
    return f"repeated {name}" if repeated else name


def _message(
    out: list[str],
    message: descriptor_pb2.DescriptorProto,
    path: tuple[int, ...],
    comments: dict[tuple[int, ...], str],
    prefix: str = "",
) -> None:
    full = f"{prefix}{message.name}"
    maps = {}
    for nested in message.nested_type:
        if nested.options.map_entry:
            key, value = nested.field
            maps[f".{PACKAGE}.{full}.{nested.name}"] = (_type(key, {}), _type(value, {}))
    out += [f"### {full}", ""]
    if path in comments:
        out += [comments[path], ""]
    if message.field:
        out += ["| field | type | number | description |", "|---|---|---|---|"]
        for index, field in enumerate(message.field):
            note = comments.get((*path, _FIELD, index), "")
            out.append(f"| `{field.name}` | {_cell(_type(field, maps))} | {field.number} | {_cell(note)} |")
        out.append("")
    else:
        out += ["No fields.", ""]
    for index, nested in enumerate(message.nested_type):
        if not nested.options.map_entry:
            _message(out, nested, (*path, _NESTED, index), comments, prefix=f"{full}.")
    for index, enum in enumerate(message.enum_type):
        _enum(out, enum, (*path, _NESTED_ENUM, index), comments, prefix=f"{full}.")


def _enum(
    out: list[str],
    enum: descriptor_pb2.EnumDescriptorProto,
    path: tuple[int, ...],
    comments: dict[tuple[int, ...], str],
    prefix: str = "",
) -> None:
    out += [f"### {prefix}{enum.name}", ""]
    if path in comments:
        out += [comments[path], ""]
    out += ["| value | number | description |", "|---|---|---|"]
    for index, value in enumerate(enum.value):
        note = comments.get((*path, _ENUM_VALUE, index), "")
        out.append(f"| `{value.name}` | {value.number} | {_cell(note)} |")
    out.append("")


def render() -> str:
    files = [file for file in _descriptors().file if file.package == PACKAGE]
    out = [
        "# gRPC API reference",
        "",
        f"Package `{PACKAGE}`. Generated from `proto/` by `proto/document.py` (`make proto`); do not edit.",
        "Every call carries `authorization: Bearer <key or access token>`; errors are gRPC status codes with",
        "`google.rpc.ErrorInfo` (and `RetryInfo` where waiting helps) in the details.",
        "",
    ]
    for file in files:
        comments = _comments(file)
        for index, service in enumerate(file.service):
            out += [f"## {service.name}", ""]
            if (_SERVICE, index) in comments:
                out += [comments[(_SERVICE, index)], ""]
            out += ["| method | request | response | description |", "|---|---|---|---|"]
            for method_index, method in enumerate(service.method):
                request = method.input_type.removeprefix(f".{PACKAGE}.")
                response = method.output_type.removeprefix(f".{PACKAGE}.")
                stream_in = "stream " if method.client_streaming else ""
                stream_out = "stream " if method.server_streaming else ""
                note = comments.get((_SERVICE, index, _METHOD, method_index), "")
                out.append(
                    f"| `{method.name}` | {stream_in}[{request}](#{request.lower()}) "
                    f"| {stream_out}[{response}](#{response.lower()}) | {_cell(note)} |"
                )
            out.append("")
    out += ["## Messages", ""]
    for file in files:
        comments = _comments(file)
        for index, message in enumerate(file.message_type):
            _message(out, message, (_MESSAGE, index), comments)
    out += ["## Enums", ""]
    for file in files:
        comments = _comments(file)
        for index, enum in enumerate(file.enum_type):
            _enum(out, enum, (_ENUM, index), comments)
    return "\n".join(out).rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when docs/api.md is stale")
    options = parser.parse_args()
    text = render()
    if options.check:
        if not OUTPUT.exists() or OUTPUT.read_text(encoding="utf-8") != text:
            print("docs/api.md is stale; run `make proto`", file=sys.stderr)
            return 1
        print("docs/api.md is current")
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(PROTO_ROOT.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
