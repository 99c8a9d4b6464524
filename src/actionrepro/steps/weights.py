"""The `actionrepro weights` step: fetch every pretrained checkpoint the params' runs start from
(recipes.<model>.init, resolved per dataset) into data/weights/, once, with the dataset downloader
(streaming, resume, mirrors, sha256 checked or pinned on the first verified download). Files obtained
by hand are passed with --file PATH (verified, then linked or copied in). Training then reads them
from data/weights/ and never touches the network. data/weights/download.json marks completion."""

from __future__ import annotations

import logging

from actionrepro import paths
from actionrepro.data import download, weights

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    parser.add_argument("--file", action="append", default=[], metavar="PATH",
                        help="a checkpoint you already have (repeatable), named as in actionrepro.data.weights")
    parser.add_argument("--insecure", action="store_true", help="skip TLS certificate verification")


def fetch(params: dict, files=(), insecure: bool = False, sources=None) -> list:
    need = weights.needed(params)
    for name, users in need.items():
        log.info("%s is the init of %s", name, ", ".join(users))
    spec = weights.as_dataset(sorted(need), sources)
    return download.download_into(spec, paths.weights_dir(), params, files, insecure)


def run(args, params: dict) -> None:
    fetch(params, args.file, args.insecure)
