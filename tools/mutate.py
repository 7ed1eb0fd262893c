"""Mutation testing of the money-and-correctness core: ``make mutate`` (not part of ``make test``).

Runs mutmut (pinned in the dev extras; ``[tool.mutmut]`` in pyproject.toml) one module at a time,
with one worker under ``nice``, each in its own folder ``build/mutate/<module>/`` (links to the
checkout and a pyproject.toml whose ``[tool.mutmut]`` mutates only that module and selects only
its fast tests; mutmut copies them into ``mutants/`` there). Each mutant runs only the selected
tests that call its function. Writes each module's row (mutants, killed, equivalent, kill rate
without the equivalent ones, date, command, run time) into docs/TESTING.md.

    python tools/mutate.py                      # every module of the core
    python tools/mutate.py planning jobtable    # some of them
    python tools/mutate.py --table-only         # rewrite the table from the last runs
    python tools/mutate.py --survivors planning # what survived; then, in build/mutate/planning:
                                                #   mutmut show NAME
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "TESTING.md"
RESULTS = ROOT / "docs" / "mutation-results.json"

WORK = ROOT / "build" / "mutate"
#: what the work folders link to (mutmut copies spotyolo/ and these into mutants/)
LINKED = ("spotyolo", "tests", "examples", "stepfunctions", "functions")


class Module(NamedTuple):
    sources: list[str]
    #: the fast tests that exercise the module (no training, no synth, no e2e)
    tests: list[str]


MODULES: dict[str, Module] = {
    # after_queue (the grant moves the budget) is run by the slot queue's tests
    "planning": Module(
        ["spotyolo/core/planning.py"], ["tests/unit/test_planning.py", "tests/unit/test_slots.py"]
    ),
    "jobtable": Module(["spotyolo/core/jobtable.py"], ["tests/unit/test_jobtable.py"]),
    "launch": Module(
        ["spotyolo/steps/launch.py"],
        # one emulator world for the module; test_steps.py's launch tests build one per test (2-5 s
        # each on the shared machine, so a mutant of launch() took minutes): what they prove about
        # the launch is proven here too
        ["tests/functions/test_launch_request.py"],
    ),
    "check_result": Module(
        ["spotyolo/steps/check_result.py"],
        # the module-world tests only: test_steps.py's check result tests build a world per test
        [
            "tests/unit/test_summary_message.py",
            "tests/functions/test_promotion.py",
            "tests/functions/test_launch_request.py",
            "-k",
            "summary or promotion or notification or check_result",
        ],
    ),
    "config": Module(
        ["spotyolo/core/config.py"],
        ["tests/unit/test_config.py", "tests/unit/test_config_rules.py", "tests/unit/test_dataset_corpus.py"],
    ),
    # the prices from AWS (spot price history, Price List API) and the report are test_cost.py's
    "cost": Module(
        ["spotyolo/core/cost.py"],
        ["tests/unit/test_cost_edges.py", "tests/unit/test_cost.py", "tests/unit/test_status_cost.py"],
    ),
    "dataset": Module(
        sorted(str(p.relative_to(ROOT)) for p in (ROOT / "spotyolo/core/dataset").glob("*.py")),
        # test_bounds.py's escaping keys and bounded labels; not its two slow hostile-size runs
        [
            "tests/unit/test_dataset.py",
            "tests/unit/test_dataset_corpus.py",
            "tests/unit/test_dataset_refusals.py",
            "tests/unit/test_bounds.py",
            "-k",
            "not memory_is_bounded and not hundred_thousand_names",
        ],
    ),
    "slots": Module(
        ["spotyolo/core/slots.py"],
        # the semaphore against one moto world per module, and the queue's place as status shows
        # it; the steps' and the workflow's queue tests build a world per test, or train
        ["tests/unit/test_slots.py", "tests/unit/test_status_cost.py"],
    ),
}

#: mutants that change nothing a user (or AWS) could observe, with the reason (docs/TESTING.md)
_CONFIG = "spotyolo.core.config."
_TABLE = "spotyolo.core.jobtable.xǁJobTableǁ"
_DATASET = "spotyolo.core.dataset."
_SLOTS = "spotyolo.core.slots."
_ISO_Z = "the `Z` to `+00:00` replacement: Python 3.11's `fromisoformat` (requires-python) reads `Z` itself"
_REQUIRED = (
    "`required` only matters for a null model, and this rule never gets a null (a null key keeps its default)"
)
EQUIVALENT: dict[str, str] = {
    _CONFIG + "x__distill_model__mutmut_3": _REQUIRED,
    _CONFIG + "x__distill_model__mutmut_7": _REQUIRED,
    _CONFIG + "x__pretrained__mutmut_4": _REQUIRED,
    _CONFIG + "x__pretrained__mutmut_8": _REQUIRED,
    _CONFIG + "x__fraction__mutmut_44": "`value > 1` to `>= 1`: 1 is already accepted as the ratio 1.0",
    _CONFIG + "x__batch__mutmut_18": "`0 < n < 1` to `<= 1`: 1 is already accepted as a whole batch size",
    _CONFIG + "x__target__mutmut_24": "`get_close_matches(n=1)` to n=3: only the first match is shown",
    _CONFIG + "x__target__mutmut_30": "`get_close_matches(n=1)` to n=2: only the first match is shown",
    **{
        _TABLE
        + name: "`AND`/`SET`/`REMOVE` in lower case: DynamoDB's expression keywords are case-insensitive"
        for name in (
            "replace_token__mutmut_25",
            "set_instance__mutmut_49",
            "update_progress__mutmut_12",
            "_update__mutmut_25",
            "_update__mutmut_34",
            "claim_cancel__mutmut_12",
            "claim_publication__mutmut_12",
        )
    },
    **{
        _TABLE + name: (
            "`ConsistentRead` dropped or False: moto's reads are always strongly consistent, so no test "
            "against the emulator can tell (on AWS a stale read of the lock could: that is why it is set)"
        )
        for name in ("get__mutmut_7", "get__mutmut_12", "scan__mutmut_5", "scan__mutmut_9")
    },
    **{
        _TABLE + name: "the default of a Scan page's Items: DynamoDB always answers it"
        for name in ("scan__mutmut_14", "scan__mutmut_16")
    },
    _TABLE + "acquire_lock__mutmut_1": (
        "the first read skipped: the lock's conditional write is then refused and the holder == "
        "execution branch returns the same run id (one request more, the same result)"
    ),
    _TABLE + "acquire_lock__mutmut_26": (
        'holder starts as `""` instead of None: every try of the loop sets it before the refusal names it'
    ),
    _TABLE + "end_attempt__mutmut_8": "`changed = None` for False: it is only tested for truth",
    _TABLE + "end_attempt__mutmut_9": (
        "`changed = True` from the start: with no open record the unchanged attempts are written "
        "back (only `updated` moves), under the same lock condition"
    ),
    "spotyolo.core.cost.x__parse__mutmut_7": _ISO_Z,
    "spotyolo.core.cost.x__parse__mutmut_8": _ISO_Z,
    "spotyolo.core.cost.x_spot_estimate__mutmut_7": (
        "rounding to 5 digits instead of 4: every listed on-demand price times SPOT_FRACTION has at most 4"
    ),
    _CONFIG + "x_check_job__mutmut_10": (
        "`problems or config is None` to `and`: inspect_job returns no config exactly when there are problems"
    ),
    _CONFIG + "x_inspect_job__mutmut_54": (
        "`if config` to `if config or True`: getattr(None, 'classes', None) is None, as the else branch"
    ),
    **{
        _CONFIG + f"x_inspect_job__mutmut_{n}": (
            "the classes problem's line and column are None (where = (config_where, None, None)): "
            "passing None or leaving them out (default None) is the same Problem"
        )
        for n in (74, 75, 78, 79)
    },
    **{
        "spotyolo.steps.launch.x_launched_instance__mutmut_" + str(n): (
            'the instance type\'s last fallback ("" to None/"XXXX"): EC2\'s CreateFleet names the type '
            "in every instance group (and its override), so the default is never reached"
        )
        for n in (52, 54, 58)
    },
    **{
        "spotyolo.steps.launch.x__create_fleet__mutmut_" + str(n): (
            "a response without `Errors` read as None instead of []: only `not errors` reads it then"
        )
        for n in (17, 19)
    },
    **{
        "spotyolo.steps.launch.x__create_fleet__mutmut_" + str(n): (
            'a throttle\'s message when EC2 left ErrorMessage out (None/"XXXX" for ""): EC2\'s fleet '
            "errors always carry one"
        )
        for n in (41, 43, 48)
    },
    **{
        "spotyolo.steps.launch.x__create_fleet__mutmut_" + str(n): (
            "the operation name of the ClientError a throttle in `Errors` is raised as: only its code "
            "(retrying) and message (the refusal) are read"
        )
        for n in (50, 62, 63, 64)
    },
    **{
        "spotyolo.steps.launch.x_launch__mutmut_" + str(n): (
            "a reused instance without `Placement` read as None instead of {}: DescribeInstances always "
            "gives an instance's Placement"
        )
        for n in (54, 56, 79, 81)
    },
    **{
        "spotyolo.steps.launch.x_launch__mutmut_" + str(n): (
            "the defaults of a raised ClientError's `Error`, `Code` and `Message`: botocore always fills "
            "them in (its parsers give every error response a Code and a Message)"
        )
        for n in (107, 109, 122, 124, 128, 130, 132, 136)
    },
    **{
        "spotyolo.steps.launch.x_launch__mutmut_" + str(n): (
            "the defaults of a fleet error's ErrorCode and ErrorMessage: EC2's CreateFleet errors always "
            "carry both"
        )
        for n in (142, 144, 148, 150, 152, 156)
    },
    "spotyolo.steps.launch.x_launch__mutmut_207": (
        "the root volume tagged with the fleet's tag list instead of the instance's: fleet_request gives "
        "both the same tags"
    ),
    "spotyolo.steps.check_result.x_check_result__mutmut_26": (
        "`item.attempts if item` to `if item or True`: Check result got here by claiming the run in "
        "the job's item, so the item exists"
    ),
    **{
        "spotyolo.steps.check_result.x__put_json__mutmut_" + str(n): (
            "metrics.json's indentation (2 to none or 3): the same JSON document for every reader"
        )
        for n in (4, 6, 7)
    },
    **{
        "spotyolo.steps.check_result.x_check_result__mutmut_" + str(n): (
            "a plot's name as the last piece of its key: `rsplit('/', 1)[-1]` is the same piece with "
            "any maxsplit, and [+1] of a two-piece split is [-1]"
        )
        for n in (44, 47, 48)
    },
    _DATASET + "inspection.x__images_from_list__mutmut_14": (
        "`utf-8-sig` to `UTF-8-SIG`: Python's codec names are case-insensitive"
    ),
    **{
        _DATASET + f"inspection.x__images_from_list__mutmut_{n}": (
            "not stripping a listed image's leading `./`: the path is normalised (posixpath.normpath) "
            "right after, which drops it too"
        )
        for n in (46, 50)
    },
    _DATASET + "sources.xǁSourceǁlist__mutmut_1": (
        "the default of a Protocol's method: the protocol's body is never called"
    ),
    **{
        _DATASET + f"sources.x_s3_exists__mutmut_{n}": (
            "MaxKeys=1 dropped or 2: one key below the prefix answers the question, more say the same"
        )
        for n in (9, 17)
    },
    _DATASET + "sources.x_s3_exists__mutmut_11": (
        "`if path` to `or True`: for the folder itself the key is the prefix, which ends with '/' "
        "(resolve_data_yaml sees to it), so rstrip('/') + '/' asks the same"
    ),
    **{
        _DATASET + f"sources.x_s3_exists__mutmut_{n}": (
            "the default of ListObjectsV2's KeyCount: S3 always answers it"
        )
        for n in (19, 21, 25)
    },
    **{
        _DATASET + f"sources.xǁS3Sourceǁlist__mutmut_{n}": (
            "the non-datetime branch of LastModified: boto3 always gives a datetime"
        )
        for n in (24, 25)
    },
    _DATASET + "sources.x_local_exists__mutmut_2": (
        "`if path` to `or True`: for '' it asks (folder / '').exists() instead of folder.is_dir(), and "
        "the folder asked about is the dataset folder, a directory"
    ),
    _DATASET
    + "sources.xǁLocalSourceǁlist__mutmut_4": "`root / prefix if prefix` to `or True`: root / '' is root",
    _DATASET + "spec.xǁ_Reportǁ__call____mutmut_3": (
        "`marks.get(key) if key` to `or True`: marks has no None key, so get(None) is None as the else branch"
    ),
    **{
        _DATASET + f"sources.x_s3_exists__mutmut_{n}": (
            "MaxKeys=1 of the exact-key look dropped or 2: the key sorts first under its own prefix"
        )
        for n in (33, 34)
    },
    **{
        _DATASET + f"inspection.x__split_summary__mutmut_{n}": (
            "a class id beyond the names: check_label_text counts only ids below nc, the number of names"
        )
        for n in (21, 22, 23)
    },
    **{
        _DATASET + f"inspection.x__check_labels__mutmut_{n}": (
            "how many threads read the labels (none given, or at least 2): the same checks, in parallel"
        )
        for n in (14, 19)
    },
    **{
        _DATASET + f"inspection.x__check_labels__mutmut_{n}": (
            "zip's strict=True dropped: pool.map gives one result per label of the chunk"
        )
        for n in (36, 39, 44)
    },
    _DATASET + "inspection.x__check_labels__mutmut_29": (
        "chunks starting at every label instead of every CHECK_CHUNK-th: overlapping chunks check "
        "the same labels again, to the same result"
    ),
    _DATASET + "labels.x_lines__mutmut_3": (
        "`start < end` to `<=`: a text ending in a newline gets one more, empty, line, and every "
        "reader of lines skips blank ones"
    ),
    _DATASET + "inspection.x_inspect_dataset__mutmut_14": (
        "listing the whole source instead of its dataset folder: only the dataset folder's entries "
        "are kept, and the source is the job's folder (config.yaml and dataset/)"
    ),
    _DATASET + "labels.x__label_text__mutmut_12": (
        "`utf-8-sig` to `UTF-8-SIG`: Python's codec names are case-insensitive"
    ),
    _DATASET + "spec.x__nc__mutmut_16": "`float('nan')` to `float('NAN')`: the same NaN",
    _DATASET
    + "paths.x_norm__mutmut_3": "`normpath(path) if path` to `or True`: normpath('') is '.', the else branch",
    **{
        _DATASET + f"inspection.x__item_images__mutmut_{n}": (
            "the '(the folder is empty)' wording: a split folder exists only through the files under "
            "it (a listing has files only; the dataset folder holds data.yaml), so it is never empty"
        )
        for n in (25, 28, 29)
    },
    **{
        _DATASET + f"sources.x_s3_exists__mutmut_{n}": (
            "stripping a trailing '/' off the key another way: split paths are normalised before they "
            "are asked about, so there is none to strip (and the prefix never starts with '/')"
        )
        for n in (13, 14, 15)
    },
    _DATASET + "spec.x__channels__mutmut_14": (
        "the channels returned with a refusal (3 to 4): the data.yaml is refused, the value is never used"
    ),
    **{
        _DATASET + f"spec.x__classes__mutmut_{n}": (
            "when nc is taken from the names: resolve_spec gives nc as `nc or len(names)` anyway, and a "
            "given nc that disagrees with the names is refused"
        )
        for n in (80, 81, 82)
    },
    _DATASET + "spec.x_write_local_data_yaml__mutmut_22": (
        "`str(folder / p) if p` to `or True`: folder / '' is the folder"
    ),
    **{
        _DATASET + f"spec.x_write_local_data_yaml__mutmut_{n}": (
            "the trainer's data.yaml's layout (key order, unicode escaped): the same document once read"
        )
        for n in (53, 54, 56, 57, 58, 59)
    },
    **{
        _CONFIG + f"x__batch__mutmut_{n}": (
            "the fallback when Ultralytics' defaults have no imgsz (640, or another key): its defaults "
            "have imgsz 640"
        )
        for n in (38, 39, 41, 42, 43, 44)
    },
    _CONFIG + "x__batch__mutmut_52": (
        "at least 2 images a batch instead of 1: fewer than 2 fit only past 10240 px, an imgsz its own "
        "rule refuses (the job is refused either way)"
    ),
    **{
        _CONFIG + f"x__largest_side__mutmut_{n}": (
            "an imgsz of exactly 32 taken as a size or not: below 226 px, 512 x (640/side)^2 is over the "
            "cap of 4096 anyway, so the batch limit is 4096 either way"
        )
        for n in (15, 16)
    },
    _CONFIG + "x_inspect_job__mutmut_18": (
        "the size of a config.yaml that is not there (0 or 1): under the limit either way, and its "
        "absence is refused by name"
    ),
    "spotyolo.core.planning.x_first_attempt__mutmut_17": (
        "`spot_unavailable` passed as the interruption count: True counts as one loss, which leaves "
        "spot exactly as the shortage does, and False as none"
    ),
    **{
        f"spotyolo.core.cost.x__spot_history__mutmut_{n}": (
            "the default of a page's SpotPriceHistory, or of an entry's AvailabilityZone: EC2 always "
            "answers them"
        )
        for n in (32, 34, 58, 60, 64)
    },
    "spotyolo.core.cost.x__spot_history__mutmut_29": (
        "one page more (11 for 10) of the history's bound: an attempt's hours of prices fit in one"
    ),
    "spotyolo.core.cost.x__spot_history__mutmut_38": (
        "`and` to `or` between the type and the Timestamp: EC2 answers only the type asked, and every "
        "entry with a Timestamp"
    ),
    **{
        f"spotyolo.core.cost.x__spot_history__mutmut_{n}": (
            "a Timestamp without a time zone: botocore gives every one in UTC, so none is naive"
        )
        for n in (53, 54, 55)
    },
    **{
        f"spotyolo.core.cost.x_hourly_from_price_list__mutmut_{n}": (
            "the defaults of a product's terms, OnDemand, priceDimensions and pricePerUnit: every product "
            "the filters match has them"
        )
        for n in (4, 6, 8, 10, 17, 19, 26, 28)
    },
    **{
        f"spotyolo.core.cost.x_listed_on_demand_price__mutmut_{n}": (
            "the default of GetProducts' PriceList: the Price List API always answers it"
        )
        for n in (25, 27)
    },
    "spotyolo.core.cost.x_live_spot_price__mutmut_11": (
        "`now` without its zone: the Lambdas' and the trainer's clock is UTC, where the naive now is "
        "the same time (botocore sends a naive time as UTC)"
    ),
    **{
        f"spotyolo.core.cost.x_run_cost__mutmut_{n}": (
            "`now` not passed to attempt_usd: it is given the attempt's seconds and does not read now"
        )
        for n in (23, 26)
    },
    "spotyolo.core.cost.x_time_weighted__mutmut_39": (
        "`hi > lo` to `>=`: a price counted for 0 seconds adds 0"
    ),
    "spotyolo.core.cost.xǁPricesǁ__call____mutmut_8": (
        "asking EC2 without a client: the read fails and is taken as unknown, as not asking"
    ),
    "spotyolo.core.cost.xǁPricesǁattempt_usd__mutmut_18": (
        "asking EC2 without a client: the read fails and is taken as unknown, as not asking"
    ),
    "spotyolo.core.cost.xǁPricesǁon_demand__mutmut_3": (
        "asking the Price List API without a client: the call fails and the table is used, as without asking"
    ),
    "spotyolo.core.cost.xǁPricesǁattempt_usd__mutmut_4": (
        "the price of an attempt without an instance type: run_cost never costs one (it never launched)"
    ),
    _CONFIG + "x_inspect_job__mutmut_9": (
        'the config starts as `""` instead of None: it stays so only when config.yaml is missing, '
        "and then the job has a problem and None is returned"
    ),
    _DATASET + "inspection.x__check_labels__mutmut_2": (
        "`spec.nc or len(spec.names)` to `and`: labels are checked only with names, and then nc is "
        "their number"
    ),
    _DATASET + "inspection.x_inspect_dataset__mutmut_6": (
        "stripping 'X' too off the dataset folder's name: the folder is `dataset` (the contract's "
        "layout), which neither starts nor ends with an X"
    ),
    _DATASET + "spec.x_resolve_spec__mutmut_57": (
        "`nc or len(names)` to `and`: _classes gives nc as the number of names whenever there are "
        "names, and no names is refused"
    ),
    **{
        _DATASET + f"inspection.x__split_summary__mutmut_{n}": (
            "the default count of a class not among the names: check_label_text counts only ids below "
            "nc, the number of names, so every counted class has its name in per_class already"
        )
        for n in (27, 29, 30)
    },
    **{
        _DATASET + f"spec.x__root__mutmut_{n}": (
            "`path: ''` or `path: .` taken through norm instead of returned at once: norm gives '' for both"
        )
        for n in (2, 3)
    },
    _DATASET + "spec.x__split_item__mutmut_36": (
        "the folder named in 'not found' when the path is the dataset folder itself: that folder "
        "always exists, so it is never not found"
    ),
    _DATASET + "spec.x__splits__mutmut_13": (
        "a missing split's refusal placed at its key even when data.yaml has no such key: a key "
        "data.yaml does not have has no line, so the refusal has none either"
    ),
    **{
        _SLOTS + name: (
            "`AND`/`SET`/`REMOVE`/`ADD` in lower case: DynamoDB's expression keywords are case-insensitive"
        )
        for name in (
            "xǁSlotQueueǁ_take__mutmut_27",
            "xǁSlotQueueǁ_take__mutmut_33",
            "xǁSlotQueueǁ_take__mutmut_36",
            "xǁSlotQueueǁ_take__mutmut_76",
            "xǁSlotQueueǁ_woken__mutmut_12",
            "xǁSlotQueueǁnew_ticket__mutmut_13",
            "xǁSlotQueueǁrelease__mutmut_9",
            "xǁSlotQueueǁrelease__mutmut_29",
            "xǁSlotQueueǁset_slots__mutmut_10",
        )
    },
    **{
        _SLOTS + name: (
            "`ConsistentRead` dropped or False: moto's reads are always strongly consistent, so no test "
            "against the emulator can tell (on AWS a stale read of the semaphore could: that is why it "
            "is set)"
        )
        for name in (
            "xǁSlotQueueǁsemaphore__mutmut_8",
            "xǁSlotQueueǁsemaphore__mutmut_9",
            "xǁSlotQueueǁwaiters__mutmut_9",
            "xǁSlotQueueǁwaiters__mutmut_19",
        )
    },
    **{
        _SLOTS + f"xǁSlotQueueǁwaiters__mutmut_{n}": (
            "the default of a Query page's Items: DynamoDB always answers it"
        )
        for n in (21, 23)
    },
    _SLOTS + "xǁSlotQueueǁwaiters__mutmut_59": (
        "the default of a waiter's document: register always writes one (the JSON of a dict, never empty)"
    ),
    **{
        _SLOTS + f"xǁSlotQueueǁsemaphore__mutmut_{n}": (
            "Semaphore.next_ticket (when present, or its default): nothing reads it, a ticket comes from "
            "new_ticket's atomic ADD"
        )
        for n in (20, 48, 52, 53, 54)
    },
    _SLOTS + "xǁSlotQueueǁ_take_again__mutmut_46": "`give_back=None` for False: it is only tested for truth",
    _SLOTS + "xǁSlotQueueǁleave__mutmut_28": (
        "`left = 1` for `left += 1`: an execution has one waiter at most (a retried wait registers "
        "under the same ticket, so the same item)"
    ),
    **{
        _SLOTS + f"xǁSlotQueueǁsemaphore__mutmut_{n}": (
            "the default of the count's source ('None' or 'XXXX' for ''): no code reads the source, "
            "and every count is written with one (set_slots)"
        )
        for n in (57, 59, 62)
    },
    _SLOTS + "xǁSlotQueueǁ_reclaim__mutmut_1": "`freed = None` for False: it is only tested for truth",
    _SLOTS + "xǁSlotQueueǁ_reclaim__mutmut_2": (
        "`freed = True` from the start: a pump with nothing left to reclaim reads the queue again up to "
        "its 64 rounds instead of stopping; the same grants and places (every holder is asked about once)"
    ),
    _SLOTS + "xǁSlotQueueǁ_reclaim__mutmut_4": (
        "stopping at the first holder already checked: the holders a pump has not checked by then are "
        "those it granted itself in this pump, which run (it has just answered them)"
    ),
    **{
        _SLOTS + name: (
            "releasing an ended holder's slot without its ticket: an execution that has ended never takes "
            "a slot again, so the slot it holds is the one under that ticket"
        )
        for name in [f"xǁSlotQueueǁ_reclaim__mutmut_{n}" for n in (9, 11, 12, 13, 14)]
        + [f"xǁSlotQueueǁlower__mutmut_{n}" for n in (6, 8, 9, 10, 11)]
    },
    **{
        _SLOTS + f"xǁSlotQueueǁ_wake__mutmut_{n}": (
            "giving back a slot this pump has just granted without its ticket: the waiter's task is over, "
            "so its execution is never granted again"
        )
        for n in (21, 23, 24)
    },
    **{
        _SLOTS + name: (
            "the ticket a retried wait is answered with (the holder's, or the waiter's): a retried wait "
            "registers under its job item's ticket (enqueue), which is the ticket its slot was granted under"
        )
        for name in [f"xǁSlotQueueǁ_wake__mutmut_{n}" for n in (15, 17)]
        + [f"xǁSlotQueueǁ_take_again__mutmut_{n}" for n in (35, 37, 38, 40, 41, 42, 45, 49)]
    },
    _SLOTS + "xǁSlotQueueǁ_output__mutmut_19": (
        "`job and attempt` in the waiter's document to `or`: enqueue writes both into every document"
    ),
    **{
        _SLOTS + f"xǁSlotQueueǁ_output__mutmut_{n}": (
            "the grant's job and attempt dumped in python mode: JobSpec and Attempt hold only JSON types, "
            "so it is the same document"
        )
        for n in (45, 46, 47, 48, 49, 50)
    },
    **{
        _SLOTS + f"xǁSlotQueueǁ_rewake_stale__mutmut_{n}": (
            "the default of a holder's `granted`: _take writes it together with the token"
        )
        for n in (10, 12, 15)
    },
    _SLOTS + "xǁSlotQueueǁ_rewake_stale__mutmut_27": (
        "the default of a holder's `output`: _take writes it together with the token"
    ),
    **{
        _SLOTS + f"xǁSlotQueueǁ_refresh__mutmut_{n}": (
            "the capacity asked when the first waiter has no attempt: enqueue gives every waiter its "
            "attempt, which always has a capacity"
        )
        for n in (24, 25)
    },
    _SLOTS + "xǁSlotQueueǁset_slots__mutmut_25": "set_slots' `read`: no caller passes it",
    **{
        _SLOTS + f"xǁSlotQueueǁ_show_places__mutmut_{n}": (
            "a waiter's count shown as the number when there is no limit: with no limit (a million "
            "slots) every waiter is granted, so none is shown with that count"
        )
        for n in (25, 27)
    },
    _SLOTS + "xǁSlotQueueǁpump__mutmut_4": (
        "a pump's bound of 64 rounds to 65: each round grants, reclaims or stops, and every change of "
        "the queue pumps again"
    ),
    **{
        _SLOTS
        + f"x__ordinal__mutmut_{n}": "the teens' range from 11 or to 19: 10 and 20 end in 0, 'th' either way"
        for n in (6, 7, 10)
    },
}

#: mutmut's exit codes (mutmut.stats.status_by_exit_code) counted as a kill
KILLED = {1, 3, 24, -24, 36, 152, 255, 37}


def _statuses(name: str) -> dict[str, int | None]:
    codes: dict[str, int | None] = {}
    for source in MODULES[name].sources:
        meta = WORK / name / "mutants" / (source + ".meta")
        if meta.exists():
            codes.update(json.loads(meta.read_text())["exit_code_by_key"])
    return codes


def count(name: str) -> dict[str, int]:
    """Mutants, killed, equivalent (that survived), survived and not yet checked (a run cut
    short) of one module, from its mutants/."""
    codes = _statuses(name)
    checked = {k: c for k, c in codes.items() if c is not None}
    killed = sum(1 for c in checked.values() if c in KILLED)
    equivalent = sum(1 for k, c in checked.items() if c not in KILLED and k in EQUIVALENT)
    return {
        "mutants": len(checked),
        "killed": killed,
        "equivalent": equivalent,
        "survived": len(checked) - killed - equivalent,
        "unchecked": len(codes) - len(checked),
    }


def survivors(name: str) -> list[str]:
    codes = _statuses(name)
    return sorted(k for k, c in codes.items() if c is not None and c not in KILLED and k not in EQUIVALENT)


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def prepare(name: str) -> Path:
    """build/mutate/<name>/: links to the checkout and a pyproject.toml for this module alone."""
    work = WORK / name
    work.mkdir(parents=True, exist_ok=True)
    for entry in LINKED:
        link = work / entry
        if not link.is_symlink():
            link.symlink_to(ROOT / entry)
    module = MODULES[name]
    text = (ROOT / "pyproject.toml").read_text()
    override = (
        f"only_mutate = {_toml_list(module.sources)}\n"
        f"pytest_add_cli_args_test_selection = {_toml_list(module.tests)}\n"
    )
    text = re.sub(r"^only_mutate = \[.*?\]\n", "", text, flags=re.S | re.M)
    text = re.sub(r"^pytest_add_cli_args_test_selection = \[.*?\]\n", "", text, flags=re.S | re.M)
    text = text.replace("[tool.mutmut]\n", "[tool.mutmut]\n" + override)
    (work / "pyproject.toml").write_text(text)
    return work


#: mutmut's workers (--children): one by default, the machine is shared
CHILDREN = 1


def rerun_survivors(name: str) -> None:
    """mutmut run NAME...: reruns exactly those mutants (the rest keep their verdicts)."""
    names = survivors(name)
    if names:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        command = [
            "nice",
            "-n",
            "10",
            sys.executable,
            "-m",
            "mutmut",
            "run",
            "--max-children",
            str(CHILDREN),
            *names,
        ]
        subprocess.run(command, cwd=prepare(name), env=env, check=False)


def _command(name: str) -> str:
    return f"mutmut run --max-children {CHILDREN} (tests: {' '.join(MODULES[name].tests)})"


def _run_date(name: str) -> str:
    meta = WORK / name / "mutants" / (MODULES[name].sources[0] + ".meta")
    return dt.datetime.fromtimestamp(meta.stat().st_mtime, dt.UTC).strftime("%Y-%m-%d")


def run(name: str) -> dict[str, object]:
    """A fresh run: mutmut keeps earlier verdicts, and a survivor must meet today's tests."""
    work = prepare(name)
    shutil.rmtree(work / "mutants", ignore_errors=True)
    command = ["nice", "-n", "10", sys.executable, "-m", "mutmut", "run", "--max-children", str(CHILDREN)]
    started = time.monotonic()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only mutants/ may be imported
    subprocess.run(command, cwd=work, env=env, check=False)
    seconds = time.monotonic() - started
    return {
        **count(name),
        "survivor_names": survivors(name),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
        "command": _command(name),
        "seconds": round(seconds),
    }


def _row(name: str, r: dict[str, object]) -> str:
    mutants, killed, eq = int(str(r["mutants"])), int(str(r["killed"])), int(str(r["equivalent"]))
    rate = f"{100 * killed / (mutants - eq):.1f}%" if mutants > eq else "-"
    files = (
        ", ".join(f"`{s}`" for s in MODULES[name].sources)
        if name != "dataset"
        else "`spotyolo/core/dataset/`"
    )
    seconds = int(str(r["seconds"]))
    minutes = f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 0 else "not recorded"
    unchecked = int(str(r.get("unchecked", 0)))
    # a run cut short says how much of the module it covers
    mutants_cell = f"{mutants} (of {mutants + unchecked}: run cut short)" if unchecked else str(mutants)
    date = f"{r['date']} (survivors rerun {r['rerun']})" if r.get("rerun") else r["date"]
    return (
        f"| {files} | {mutants_cell} | {killed} | {eq} | {r['survived']} | {rate} | {date} "
        f"| `{r['command']}` | {minutes} |"
    )


def _survivor_names(name: str, result: dict[str, object]) -> list[str]:
    """This checkout's survivors; those recorded with the row when its run is not here."""
    if _statuses(name) and any(c is not None for c in _statuses(name).values()):
        return survivors(name)
    recorded = result.get("survivor_names", [])
    return [str(m) for m in recorded] if isinstance(recorded, list) else []


def write_page(results: dict[str, dict[str, object]]) -> None:
    header = (
        "| module | mutants | killed | equivalent | survived | kill rate (non-equivalent) | date "
        "| command | run time |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = "\n".join(_row(n, results[n]) for n in MODULES if n in results)
    table = f"<!-- mutate:table -->\n{header}{rows}\n<!-- /mutate:table -->"
    eq_rows = "\n".join(f"- `{k}`: {v}" for k, v in sorted(EQUIVALENT.items())) or "- (none)"
    equivalents = f"<!-- mutate:equivalent -->\n{eq_rows}\n<!-- /mutate:equivalent -->"
    lines = [
        f"- {n}: "
        + (", ".join(f"`{m.rsplit('.', 1)[-1]}`" for m in _survivor_names(n, results[n])) or "none")
        for n in MODULES
        if n in results
    ]
    lasting = "<!-- mutate:survivors -->\n" + "\n".join(lines) + "\n<!-- /mutate:survivors -->"
    text = PAGE.read_text()
    text = re.sub(
        r"<!-- mutate:survivors -->.*?<!-- /mutate:survivors -->", lambda _: lasting, text, flags=re.S
    )
    text = re.sub(r"<!-- mutate:table -->.*?<!-- /mutate:table -->", lambda _: table, text, flags=re.S)
    text = re.sub(
        r"<!-- mutate:equivalent -->.*?<!-- /mutate:equivalent -->", lambda _: equivalents, text, flags=re.S
    )
    PAGE.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("modules", nargs="*", help=f"default: all of {', '.join(MODULES)}")
    parser.add_argument("--table-only", action="store_true", help="rewrite the table, run nothing")
    parser.add_argument("--survivors", action="store_true", help="list the surviving mutants, run nothing")
    parser.add_argument(
        "--rerun-survivors",
        action="store_true",
        help="run only the last run's survivors again, against today's tests (after adding tests)",
    )
    parser.add_argument("--children", type=int, default=1, help="mutmut's workers (default 1)")
    args = parser.parse_args(argv)
    global CHILDREN
    CHILDREN = args.children
    names = args.modules or list(MODULES)
    unknown = [n for n in names if n not in MODULES]
    if unknown:
        parser.error(f"unknown module {unknown[0]!r}: choose from {', '.join(MODULES)}")
    if args.survivors:
        for name in names:
            print("\n".join(survivors(name)))
        return 0
    results: dict[str, dict[str, object]] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for name in names:
        if args.rerun_survivors:
            rerun_survivors(name)
            if name in results:
                results[name] = {
                    **results[name],
                    **count(name),
                    "survivor_names": survivors(name),
                    "rerun": _run_date(name),
                }
            continue
        if args.table_only:
            if name in results:
                results[name] = {**results[name], **count(name), "survivor_names": survivors(name)}
            elif _statuses(name):  # a run stopped before it recorded itself
                results[name] = {
                    **count(name),
                    "date": _run_date(name),
                    "command": _command(name),
                    "seconds": -1,
                }
            continue
        results[name] = run(name)
        RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        write_page(results)
        print(_row(name, results[name]))
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    write_page(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
