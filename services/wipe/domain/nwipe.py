"""nwipe/ShredOS logs as erasure reports (WIPE.md, `format:"nwipe"`).

What nwipe writes (src/logging.c, nwipe_log_summary; src/device.c; src/hpa_dco.c):
- per drive at discovery: `Found /dev/sda,  ATA, <model>, <size>, S/N=<serial>`, then the HPA/DCO check:
  `No hidden sectors on /dev/sda`, ` *** HIDDEN SECTORS DETECTED ! *** on /dev/sda` or
  `HIDDEN SECTORS INDETERMINATE! on /dev/sda, ...`;
- at the end three tables: "Error Summary" (pass, verification and fdatasync errors per device), "Erasure Summary"
  (bytes erased, bytes total) and "Drive Status" (device | Erased / -FAILED- / UABORTED | thru-put | time |
  model/serial), closed by `[YYYY/MM/DD hh:mm:ss] Total Throughput <x>/s, <method label>, <n>R+<B|NB>+<NV|VL|VA>`.

nwipe knows nothing of the device the drives sit in, nor whether an ATA drive is a hard disk or an SSD. Those
facts are `key: value` lines the operator's station adds to the log before the tool signs it (so they are
covered by the signature), anywhere in the text:

    device.kind: laptop            device.make: Lenovo        device.model: ThinkPad T480
    device.serial: PF1KX2AB        device.imei: (phones)      activation_lock: off
    report_id: <station's id>      media.sda.type: ssd        media.sda.hidden_areas: reset   (optional)

Each drive of the Drive Status table becomes one medium: method `overwrite` with nwipe's passes (from the method
table of the policy), bytes from the Erasure Summary, verification `full` when nwipe verified (VL/VA, or a
verify-only method) and failed when it counted verification errors.
"""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

from .policy import NwipeRules
from .report import (
    DEVICE_KINDS,
    MEDIA_TYPES,
    Device,
    MalformedReport,
    Medium,
    Report,
    Verification,
    check_identity,
)

_HEADER = re.compile(
    r"^\s*(device\.(?:kind|make|model|serial|imei)|activation_lock|report_id|"
    r"media\.([A-Za-z0-9_-]+)\.(type|hidden_areas))\s*[:=]\s*(.*?)\s*$"
)
_STAMP = r"\[(\d{4})/(\d{2})/(\d{2}) (\d{2}):(\d{2}):(\d{2})\]"
_FOUND = re.compile(r"Found /dev/(\S+?),\s*(\S+),\s*(.*),\s*([\d.]+\s*[KMGTP]?B),\s*S/N=(.*?)\s*$")
_NO_HIDDEN = re.compile(r"No hidden sectors on /dev/(\S+)")
_HIDDEN = re.compile(r"HIDDEN SECTORS DETECTED ! \*\*\* on /dev/(\S+)")
_INDETERMINATE = re.compile(r"HIDDEN SECTORS INDETERMINATE! on /dev/(\S+?),")
_ROW = re.compile(r"^[! ]\s*(\S+)\s*\|(.*)$")
_TOTAL = re.compile(_STAMP + r" Total Throughput [^,]*, (.+), (\d+)R\+(B|NB)\+(NV|VL|VA)\s*$")
_STATUS = {"Erased": "passed", "-FAILED-": "failed", "UABORTED": "aborted", "INSANITY": "failed"}
_SIZE_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "PB": 10**15}
_BUS_TYPES = {"NVME": "nvme"}


def _table(lines: list[str], title: str) -> list[tuple[str, list[str]]]:
    """Rows (device, cells) of the summary table whose banner line contains `title`."""
    rows: list[tuple[str, list[str]]] = []
    start = next((i for i, ln in enumerate(lines) if ln.startswith("*") and f" {title} " in ln), None)
    if start is None:
        return rows
    for ln in lines[start + 3 :]:  # banner, column titles, rule
        if ln.startswith("*") or ln.startswith("-") or not ln.strip():
            break
        m = _ROW.match(ln)
        if m:
            rows.append((m.group(1), [c.strip() for c in m.group(2).split("|")]))
    return rows


def _size_bytes(text: str) -> int:
    m = re.fullmatch(r"([\d.]+)\s*([KMGTP]?B)", text.strip())
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)]) if m else 0


def parse_nwipe_log(text: str, rules: NwipeRules, kinds_needing_identity: frozenset[str]) -> Report:
    lines = text.splitlines()
    header: dict[str, str] = {}
    media_hdr: dict[str, dict[str, str]] = {}
    found: dict[str, tuple[str, str, str, str]] = {}  # dev → (bus, model, size text, serial)
    hidden: dict[str, str] = {}
    total = None
    for ln in lines:
        h = _HEADER.match(ln)
        if h:
            if h.group(2):
                media_hdr.setdefault(h.group(2), {})[h.group(3)] = h.group(4)
            else:
                header[h.group(1)] = h.group(4)
            continue
        if m := _FOUND.search(ln):
            found[m.group(1)] = (m.group(2).strip(), m.group(3).strip(), m.group(4), m.group(5).strip())
        elif m := _NO_HIDDEN.search(ln):
            hidden[m.group(1)] = "none"
        elif m := _HIDDEN.search(ln):
            hidden[m.group(1)] = "detected"
        elif m := _INDETERMINATE.search(ln):
            hidden[m.group(1)] = "indeterminate"
        elif m := _TOTAL.search(ln):
            total = m
    problems: list[tuple[str, str]] = []
    status_rows = _table(lines, "Drive Status")
    if not status_rows:
        problems.append(("report", "no nwipe Drive Status table"))
    if total is None:
        problems.append(("report", "no nwipe 'Total Throughput' line (method, rounds, verification)"))
    kind = header.get("device.kind", "")
    if kind not in DEVICE_KINDS:
        problems.append(("device.kind", f"add a line 'device.kind: <{'|'.join(DEVICE_KINDS)}>'"))
    lock = header.get("activation_lock", "off" if kind == "drive" else "")
    if lock not in ("off", "on"):
        problems.append(
            ("activation_lock", "add a line 'activation_lock: <off|on>' (the device's activation/cloud lock)")
        )
    if problems:
        raise MalformedReport(problems)
    assert total is not None
    label, rounds, blank, verify = total.group(7), int(total.group(8)), total.group(9), total.group(10)
    method = rules.methods.get(label.strip())
    if method is None:
        raise MalformedReport(
            [("report", f"unknown nwipe method {label!r} (known: {sorted(rules.methods)})")]
        )
    verify_only = method.passes == 0
    passes = method.passes * rounds + (1 if blank == "B" and not verify_only else 0)
    random_passes = method.random_passes * rounds
    y, mo, d, hh, mi, ss = (int(total.group(i)) for i in range(1, 7))
    created_at = datetime(y, mo, d, hh, mi, ss, tzinfo=ZoneInfo(rules.timezone))
    errors = {dev: cells for dev, cells in _table(lines, "Error Summary")}
    erased = {dev: cells for dev, cells in _table(lines, "Erasure Summary")}

    media: list[Medium] = []
    for dev, cells in status_rows:
        if len(cells) < 4:
            raise MalformedReport([("report", f"Drive Status row of {dev} has {len(cells)} columns, not 5")])
        status = _STATUS.get(cells[0].strip())
        if status is None:
            raise MalformedReport([("report", f"unknown drive status {cells[0]!r} for {dev}")])
        bus, model, size_text, serial = found.get(dev, ("", "", "", ""))
        if not serial:
            serial = cells[3].rpartition("/")[2].strip()
        mtype = media_hdr.get(dev, {}).get("type") or _BUS_TYPES.get(bus.upper(), "")
        if mtype not in MEDIA_TYPES:
            raise MalformedReport(
                [
                    (
                        f"media.{dev}.type",
                        f"nwipe cannot tell what {dev} is: add 'media.{dev}.type: <hdd|ssd|...>'",
                    )
                ]
            )
        if dev in erased and len(erased[dev]) >= 2 and erased[dev][0].isdigit() and erased[dev][1].isdigit():
            bytes_erased, capacity = int(erased[dev][0]), int(erased[dev][1])
        elif verify_only:
            bytes_erased, capacity = 0, _size_bytes(size_text)
        else:
            raise MalformedReport(
                [("report", f"no Erasure Summary row for {dev} (bytes erased): nwipe ≥ 0.38 writes one")]
            )
        verification = None
        if verify_only or verify in ("VL", "VA"):
            verify_errors = errors.get(dev, ["0", "0"])[1] if len(errors.get(dev, [])) > 1 else "0"
            ok = verify_errors.isdigit() and int(verify_errors) == 0
            verification = Verification(mode="full", result="passed" if ok else "failed")
        hidden_areas = (
            media_hdr.get(dev, {}).get("hidden_areas")
            or hidden.get(dev)
            or ("not_supported" if mtype == "nvme" else "unknown")
        )
        media.append(
            Medium(
                type=mtype,
                serial=serial,
                capacity_bytes=capacity,
                bytes_erased=bytes_erased,
                hidden_areas=hidden_areas,
                method="overwrite",
                passes=passes,
                random_passes=random_passes,
                erase_result=status,
                verification=verification,
                label=dev,
            )
        )
    first_model = found.get(status_rows[0][0], ("", "", "", ""))[1]
    model = header.get("device.model") or (first_model if kind == "drive" else "")
    if not model:
        raise MalformedReport([("device.model", "add a line 'device.model: <model>'")])
    device = Device(
        kind=kind,
        make=header.get("device.make", ""),
        model=model,
        imei=_imei(header.get("device.imei")),
        serial=header.get("device.serial") or None,
    )
    check_identity(device, tuple(media), kinds_needing_identity)
    report_id = header.get("report_id") or f"nwipe:{created_at.isoformat()}:" + ",".join(
        m.serial for m in media
    )
    return Report(
        format="nwipe",
        report_id=report_id,
        created_at=created_at,
        device=device,
        activation_lock=lock,
        media=tuple(media),
    )


def _imei(value: str | None) -> str | None:
    if not value:
        return None
    from services.kernel.checkdigits import validate_imei
    from services.kernel.errors import ValidationFailed

    try:
        return validate_imei(value, "device.imei")
    except ValidationFailed as exc:
        raise MalformedReport([("device.imei", exc.errors[0]["message"])]) from None
