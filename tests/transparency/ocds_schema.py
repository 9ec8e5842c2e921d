"""Validate OCDS output offline against the official OCDS 1.1.5 schemas bundled in
``marketplace/data/ocds/`` (Draft 4, with format checks for date-times).

The release package schema refers to the release schema by its URL; a ``referencing`` registry
serves that URL from the bundled file, so nothing is fetched.

The official record package schema is not among the files the project has from the OCDS
release, so records are checked against ``RECORD_PACKAGE_SCHEMA`` below: the record package's
structure as OCDS 1.1.5 defines it (required ``uri``, ``publisher``, ``publishedDate``,
``records``, ``version``; each record an ``ocid``, a non-empty list of embedded releases and a
``compiledRelease``), with the package metadata fields and every release taken from the official
files.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft4Validator
from referencing import Registry
from referencing.jsonschema import DRAFT4

RELEASE_SCHEMA_URL = "https://standard.open-contracting.org/schema/1__1__5/release-schema.json"
PACKAGE_SCHEMA_URL = (
    "https://standard.open-contracting.org/schema/1__1__5/release-package-schema.json"
)


def _load(name: str) -> dict[str, Any]:
    with resources.files("marketplace.data").joinpath(f"ocds/{name}").open(encoding="utf-8") as fh:
        return json.load(fh)


@cache
def release_schema() -> dict[str, Any]:
    return _load("release-schema.json")


@cache
def release_package_schema() -> dict[str, Any]:
    return _load("release-package-schema.json")


@cache
def registry() -> Registry:
    return Registry().with_resources(
        [
            (RELEASE_SCHEMA_URL, DRAFT4.create_resource(release_schema())),
            (PACKAGE_SCHEMA_URL, DRAFT4.create_resource(release_package_schema())),
        ]
    )


def record_package_schema() -> dict[str, Any]:
    package = release_package_schema()["properties"]
    release_ref = {"$ref": RELEASE_SCHEMA_URL}
    return {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "object",
        "required": ["uri", "publisher", "publishedDate", "records", "version"],
        "properties": {
            **{
                k: package[k]
                for k in (
                    "uri",
                    "version",
                    "publishedDate",
                    "publisher",
                    "license",
                    "publicationPolicy",
                )
            },
            "records": {
                "type": "array",
                "minItems": 1,
                "uniqueItems": True,
                "items": {
                    "type": "object",
                    "required": ["ocid", "releases"],
                    "properties": {
                        "ocid": {"type": "string"},
                        "releases": {"type": "array", "minItems": 1, "items": release_ref},
                        "compiledRelease": release_ref,
                    },
                },
            },
        },
    }


def _validator(schema: dict[str, Any]) -> Draft4Validator:
    return Draft4Validator(
        schema, registry=registry(), format_checker=Draft4Validator.FORMAT_CHECKER
    )


def errors(schema: dict[str, Any], instance: Any) -> list[str]:
    return [
        f"{'/'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in _validator(schema).iter_errors(instance)
    ]


def assert_valid_release(release: dict[str, Any]) -> None:
    problems = errors(release_schema(), release)
    assert not problems, problems


def assert_valid_release_package(package: dict[str, Any]) -> None:
    problems = errors(release_package_schema(), package)
    assert not problems, problems
    for release in package["releases"]:
        assert_valid_release(release)


def assert_valid_record_package(package: dict[str, Any]) -> None:
    problems = errors(record_package_schema(), package)
    assert not problems, problems
