"""Coverage as one self-contained HTML page, and the evidence details every report cites.

The page loads nothing: CSS and a few lines of JavaScript are inline, pinned by
hashes in a Content-Security-Policy that forbids every other script, style,
font, image or connection. Every string that comes from evidence or from
configuration (artefact names, finding subjects and reasons, titles, SoA
justifications) is HTML-escaped, so an artefact named ``<script>…`` is text.

For machines the page carries its numbers as attributes: each summary count is
``<td id="count-FW-STATUS" data-framework data-status data-count>``, the total
``id="total-FW"``; each heatmap cell and each requirement's drill-down has
``data-requirement`` and ``data-status``; the stale, missing and failing lists
have ``id="stale-FW"`` (etc.) and ``data-count``.

Signature status is what the store index records: the run whose signed
statement lists the artefact, the signing key id and the statement's SHA-256.
The page says "signed in run X by key Y"; checking the signature is
``affidavit verify``'s job.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from affidavit import __version__
from affidavit.agent.coverage import STATUSES, ControlCoverage, Coverage, FrameworkCoverage, RequirementCoverage
from affidavit.agent.coverage_query import EvidenceRef, connect, parse_ttl
from affidavit.errors import StoreError
from affidavit.signing.predicate import parse_utc, utc_iso
from affidavit.store.index import REINDEX_HINT

EvidenceKey = tuple[str, str, str]  # (run_id, digest, name): one artefact of one run
MAX_FINDINGS = 200  # per control on the page; the JSON report has them all
LABEL = {"passing": "PASS", "partial": "PARTIAL", "failing": "FAIL", "stale": "STALE", "missing": "MISSING",
         "not-applicable": "N/A"}
SYMBOL = {"passing": "✔", "partial": "◐", "failing": "✘", "stale": "◷", "missing": "○", "not-applicable": "–"}
LISTS = ("failing", "stale", "missing")


@dataclass(frozen=True)
class ArtefactDetail:
    """One cited artefact as the index describes it, with the run that signed it."""

    ref: EvidenceRef
    media_type: str
    size: int
    collector: str
    effective_from: datetime | None
    effective_to: datetime | None
    ttl: str | None
    source: str
    keyid: str
    statement_sha256: str

    @property
    def signature(self) -> str:
        return f"signed in run {self.ref.run_id} by key {self.keyid}"

    def expires(self) -> datetime | None:
        """When this artefact stops being fresh by its own TTL or effective period (None: not by itself)."""
        d = parse_ttl(self.ttl)
        ends = [t for t in (self.ref.collected_at + d if d else None, self.effective_to) if t is not None]
        return min(ends, default=None)

    def freshness(self, now: datetime) -> str:
        """'fresh until T', 'stale since T' or 'no TTL'."""
        ends = self.expires()
        if ends is None:
            return "no TTL"
        return ("fresh until " if ends >= now else "stale since ") + utc_iso(ends)


def evidence_key(ref: EvidenceRef) -> EvidenceKey:
    return (ref.run_id, ref.digest, ref.name)


def cited_evidence(controls: Iterable[ControlCoverage]) -> dict[EvidenceKey, EvidenceRef]:
    """The artefacts coverage cites for ``controls``: each one's newest and those behind its latest findings."""
    out: dict[EvidenceKey, EvidenceRef] = {}
    for c in controls:
        refs = ([c.newest] if c.newest else []) + [f.evidence for f in c.findings]
        for ref in refs:
            out.setdefault(evidence_key(ref), ref)
    return out


_DETAIL = ("SELECT a.media_type, a.size, a.collector, a.effective_from, a.effective_to, a.ttl, r.source, r.keyid, "
           "r.statement_sha256 FROM artefacts a JOIN runs r ON r.run_id = a.run_id "
           "WHERE a.digest = ? AND a.run_id = ? AND a.name = ? ORDER BY a.seq LIMIT 1")


def evidence_details(index_path: Path, refs: Iterable[EvidenceRef]) -> dict[EvidenceKey, ArtefactDetail]:
    """Media type, effective period, TTL and signing run of each artefact (StoreError if the index is unreadable)."""
    conn = connect(index_path)
    out: dict[EvidenceKey, ArtefactDetail] = {}
    try:
        for ref in refs:
            row = conn.execute(_DETAIL, (ref.digest, ref.run_id, ref.name)).fetchone()
            if row is None:
                continue
            media, size, collector, eff_from, eff_to, ttl, source, keyid, stmt = row
            out[evidence_key(ref)] = ArtefactDetail(
                ref, media, size, collector, parse_utc(eff_from) if eff_from else None,
                parse_utc(eff_to) if eff_to else None, ttl, source, keyid, stmt)
    except sqlite3.Error as e:
        raise StoreError(f"the store index {index_path} cannot be read ({e})", hint=REINDEX_HINT) from None
    finally:
        conn.close()
    return out


def report_controls(cov: Coverage) -> list[ControlCoverage]:
    """The controls the page shows: those the frameworks' requirements link to, then unknown ones with evidence."""
    ids = {lk.mapping.source for fc in cov.frameworks for r in fc.requirements for lk in r.controls}
    ids |= {cid for cid, c in cov.controls.items() if c.evidence_count}
    return [cov.controls[cid] for cid in sorted(ids) if cid in cov.controls]


# -- rendering ----------------------------------------------------------------------------------

def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _anchor(prefix: str, text: str) -> str:
    """An element id for ``text``: safe characters kept, anything else spelled as ``_hex_``."""
    return prefix + re.sub(r"[^A-Za-z0-9_.:-]", lambda m: f"_{ord(m.group()):x}_", text)


def _ev_anchor(key: EvidenceKey) -> str:
    return "ev-" + hashlib.sha256("\0".join(key).encode()).hexdigest()[:20]


def _badge(status: str) -> str:
    return f'<span class="badge st-{_e(status)}">{SYMBOL.get(status, "")} {_e(status)}</span>'


def _time(t: datetime | None) -> str:
    return f'<time datetime="{utc_iso(t)}">{utc_iso(t)}</time>' if t else "—"


def _title(r: RequirementCoverage) -> str:
    q = r.requirement
    return q.title or " — ".join(x for x in (q.group, q.note) if x) or ""


def _summary(cov: Coverage) -> list[str]:
    out = ['<section id="summary"><h2>At a glance</h2><table class="summary"><thead><tr><th>Framework</th>'
           '<th>Requirements</th>' + "".join(f'<th class="st-{s}">{SYMBOL[s]} {s}</th>' for s in STATUSES)
           + "</tr></thead><tbody>"]
    for fc in cov.frameworks:
        fw, n = fc.framework.id, fc.summary()
        cells = "".join(f'<td class="num" id="{_anchor("count-", f"{fw}-{s}")}" data-framework="{_e(fw)}" '
                        f'data-status="{s}" data-count="{n[s]}">{n[s]}</td>' for s in STATUSES)
        out.append(f'<tr data-framework="{_e(fw)}"><th><a href="#{_anchor("fw-", fw)}">{_e(fc.framework.title)}</a> '
                   f'<span class="mono">({_e(fw)})</span></th><td class="num" id="{_anchor("total-", fw)}" '
                   f'data-count="{len(fc.requirements)}">{len(fc.requirements)}</td>{cells}</tr>')
    out.append("</tbody></table></section>")
    return out


def _heatmap(fc: FrameworkCoverage) -> list[str]:
    n = fc.summary()
    label = ", ".join(f"{n[s]} {s}" for s in STATUSES)
    out = [f'<div class="bar" role="img" aria-label="{_e(label)}">'
           + "".join(f'<span class="st-{s}" data-count="{n[s]}"></span>' for s in STATUSES) + "</div>",
           '<p class="legend">' + " ".join(f'<span class="badge st-{s}">{SYMBOL[s]} {LABEL[s]} = {s}</span>'
                                            for s in STATUSES) + "</p>"]
    group = ""
    out.append('<div class="heatmap">')
    for r in fc.requirements:
        if (r.requirement.group or "") != group:
            group = r.requirement.group or ""
            out.append(f'<div class="group">{_e(group)}</div>')
        rid = r.requirement.id
        out.append(f'<a class="cell st-{r.status}" href="#{_anchor("req-", rid)}" data-requirement="{_e(rid)}" '
                   f'data-status="{r.status}" title="{_e(rid)}: {_e(_title(r))} ({r.status})">'
                   f'<span class="rid">{_e(r.requirement.local_id)}</span>'
                   f'<span class="lbl">{SYMBOL[r.status]} {LABEL[r.status]}</span></a>')
    out.append("</div>")
    return out


def _lists(fc: FrameworkCoverage) -> list[str]:
    out = ['<div class="lists">']
    for status in LISTS:
        rows = [r for r in fc.requirements if r.status == status]
        out.append(f'<section class="list" id="{_anchor(status + "-", fc.framework.id)}" data-status="{status}" '
                   f'data-count="{len(rows)}"><h3>{SYMBOL[status]} {status.capitalize()} ({len(rows)})</h3>')
        if not rows:
            out.append("<p class=\"none\">none</p></section>")
            continue
        out.append("<ul>")
        for r in rows:
            rid = r.requirement.id
            newest = f" · newest {utc_iso(r.newest.collected_at)}" if status == "stale" and r.newest else ""
            out.append(f'<li data-requirement="{_e(rid)}"><a href="#{_anchor("req-", rid)}">{_e(rid)}</a> '
                       f'{_e(_title(r))}<br><small>{_e(r.reason)}{newest}</small></li>')
        out.append("</ul></section>")
    out.append("</div>")
    return out


def _requirement(r: RequirementCoverage) -> list[str]:
    rid = r.requirement.id
    newest = f" · newest {utc_iso(r.newest.collected_at)}" if r.newest else ""
    out = [f'<details class="req" id="{_anchor("req-", rid)}" data-requirement="{_e(rid)}" data-status="{r.status}">'
           f'<summary>{_badge(r.status)} <b>{_e(rid)}</b> {_e(_title(r))} '
           f'<small>· evidence {r.evidence_count}{newest}</small></summary><div class="body">',
           f"<p>{_e(r.reason)}</p>"]
    if r.soa is not None:
        verdict = "applicable" if r.soa.applicable else "not applicable"
        extra = "".join(f" · {k} {_e(v)}" for k, v in (("justification:", r.soa.justification),
                                                        ("owner:", r.soa.owner)) if v)
        out.append(f"<p>Statement of Applicability: {verdict}{extra}</p>")
    if r.controls:
        out.append("<table><thead><tr><th>Common control</th><th>Relationship</th><th>Counted</th>"
                   "<th>Status</th><th>Evidence</th></tr></thead><tbody>")
        for lk in r.controls:
            c = lk.coverage
            out.append(f'<tr><td><a href="#{_anchor("ctl-", c.control)}">{_e(c.control)}</a> {_e(c.title or "")}</td>'
                       f"<td>{_e(lk.mapping.relationship)}</td><td>{'yes' if lk.mapping.counted else 'no (shown only)'}"
                       f"</td><td>{_badge(c.status)}</td><td class=\"num\">{c.evidence_count}</td></tr>")
        out.append("</tbody></table>")
    if r.uncovered:
        out.append("<p>Uncovered in the audit period: " + ", ".join(
            f"{_time(s)} – {_time(e)}" for s, e in r.uncovered) + "</p>")
    if r.related_requirements:
        out.append("<p>Crosswalk (shown, never counted): " + ", ".join(_e(x) for x in r.related_requirements) + "</p>")
    out.append("</div></details>")
    return out


def _evidence_link(ref: EvidenceRef) -> str:
    return f'<a href="#{_ev_anchor(evidence_key(ref))}">{_e(ref.name)}</a>'


def _control(c: ControlCoverage, details: Mapping[EvidenceKey, ArtefactDetail]) -> list[str]:
    counts = c.counts()
    out = [f'<details class="control" id="{_anchor("ctl-", c.control)}" data-control="{_e(c.control)}" '
           f'data-status="{c.status}"><summary>{_badge(c.status)} <b>{_e(c.control)}</b> {_e(c.title or "")} '
           f"<small>· {c.evidence_count} artefact(s), {c.fresh_count} fresh</small></summary><div class=\"body\">",
           f"<p>{_e(c.reason)}</p>"]
    if c.title is None and c.evidence_count:
        out.append("<p><b>The control library does not define this control: its evidence counts for nothing.</b></p>")
    if c.newest:
        d = details.get(evidence_key(c.newest))
        sig = f" · {_e(d.signature)}" if d else ""
        out.append(f"<p>Newest evidence: {_evidence_link(c.newest)} collected {_time(c.newest.collected_at)}{sig}</p>")
    findings = c.findings
    if findings:
        out.append(f"<p>Latest findings per subject: {counts['pass']} pass, {counts['fail']} fail, "
                   f"{counts['unknown']} unknown</p><table><thead><tr><th>Result</th><th>Subject</th><th>Reason</th>"
                   "<th>Evidence</th></tr></thead><tbody>")
        for f in findings[:MAX_FINDINGS]:
            out.append(f'<tr class="finding" data-result="{_e(f.result)}"><td class="res-{_e(f.result)}">'
                       f"{_e(f.result)}</td><td>{_e(f.subject)}</td><td>{_e(f.reason)}</td>"
                       f"<td>{_evidence_link(f.evidence)}</td></tr>")
        out.append("</tbody></table>")
        if len(findings) > MAX_FINDINGS:
            out.append(f"<p>… and {len(findings) - MAX_FINDINGS} more (see <code>--format json</code>)</p>")
    out.append("</div></details>")
    return out


def _evidence(refs: Mapping[EvidenceKey, EvidenceRef], details: Mapping[EvidenceKey, ArtefactDetail],
              now: datetime) -> list[str]:
    out = ['<section id="evidence"><h2>Evidence cited</h2>', f"<p>{len(refs)} artefact(s).</p>",
           "<table><thead><tr><th>Artefact</th><th>Digest</th><th>Collected</th><th>Effective</th><th>Freshness</th>"
           "<th>Signature</th></tr></thead><tbody>"]
    for key, ref in sorted(refs.items(), key=lambda kv: (kv[1].name, kv[1].collected_at, kv[0])):
        d = details.get(key)
        eff = f"{_time(d.effective_from or ref.collected_at)} – {_time(d.effective_to)}" if d else "—"
        fresh = f"TTL {_e(d.ttl or 'none')} · {_e(d.freshness(now))}" if d else "—"
        sig = (f"{_e(d.signature)}<br><small>statement sha256:{_e(d.statement_sha256)} · source {_e(d.source)} · "
               f"{_e(d.collector)}</small>" if d else "not in the store index")
        media = f"<br><small>{_e(d.media_type)}, {d.size} bytes</small>" if d else ""
        out.append(f'<tr id="{_ev_anchor(key)}" data-digest="sha256:{_e(ref.digest)}" data-run="{_e(ref.run_id)}">'
                   f"<td>{_e(ref.name)}{media}</td><td class=\"mono digest\">sha256:{_e(ref.digest)}</td>"
                   f"<td>{_time(ref.collected_at)}</td><td>{eff}</td><td>{fresh}</td><td>{sig}</td></tr>")
    out.append("</tbody></table></section>")
    return out


def render_html(cov: Coverage, details: Mapping[EvidenceKey, ArtefactDetail]) -> str:
    """The whole page for ``cov``; ``details`` from :func:`evidence_details` (missing ones are shown as such)."""
    controls = report_controls(cov)
    refs = cited_evidence(controls)
    shown = {evidence_key(c.newest) for c in controls if c.newest}
    shown |= {evidence_key(f.evidence) for c in controls for f in c.findings[:MAX_FINDINGS]}
    refs = {k: v for k, v in refs.items() if k in shown}
    gen = utc_iso(cov.generated_at)
    period = f" · audit period {_time(cov.period.start)} – {_time(cov.period.end)}" if cov.period else ""
    body = ["<header><h1>Evidence coverage</h1>",
            f'<p>Generated {_time(cov.generated_at)} by Affidavit {_e(__version__)}{period}</p>',
            "<p class=\"note\">Signature status is what the store index records: the run whose signed statement "
            "lists each artefact and the signing key id. It is not verified here; run <code>affidavit verify</code> "
            "on the store or an exported bundle for that.</p>",
            '<p><button type="button" data-toggle="open">Expand all</button> '
            '<button type="button" data-toggle="close">Collapse all</button></p>',
            "<nav>" + " · ".join(f'<a href="#{_anchor("fw-", fc.framework.id)}">{_e(fc.framework.id)}</a>'
                                 for fc in cov.frameworks) + ' · <a href="#controls">common controls</a> · '
            '<a href="#evidence">evidence</a></nav></header>', *_summary(cov)]
    for fc in cov.frameworks:
        soa = f"<p>Statement of Applicability: {_e(fc.soa.path)}</p>" if fc.soa and fc.soa.path else ""
        body += [f'<section class="framework" id="{_anchor("fw-", fc.framework.id)}" '
                 f'data-framework="{_e(fc.framework.id)}"><h2>{_e(fc.framework.title)} '
                 f'<span class="mono">({_e(fc.framework.id)})</span></h2>{soa}',
                 *_heatmap(fc), *_lists(fc), "<h3>Requirements</h3>"]
        for r in fc.requirements:
            body += _requirement(r)
        body.append("</section>")
    body.append('<section id="controls"><h2>Common controls</h2>')
    for c in controls:
        if c.evidence_count:
            body += _control(c, details)
    empty = [c for c in controls if not c.evidence_count]
    if empty:
        body.append(f"<h3>{SYMBOL['missing']} No evidence ({len(empty)})</h3><ul class=\"nodata\">" + "".join(
            f'<li id="{_anchor("ctl-", c.control)}" data-control="{_e(c.control)}" data-status="{c.status}">'
            f"<b>{_e(c.control)}</b> {_e(c.title or '')}</li>" for c in empty) + "</ul>")
    body.append("</section>")
    body += _evidence(refs, details, cov.generated_at)
    return _page(f"Affidavit evidence coverage {gen}", "\n".join(body))


_CSS = """
:root{font-family:"DejaVu Sans",system-ui,sans-serif;color:#1f2328;font-size:14px}*{box-sizing:border-box}
body{margin:0 auto;max-width:1240px;padding:12px 24px;line-height:1.4}
h1{font-size:1.7em;margin:.2em 0}h2{border-bottom:1px solid #d0d7de;padding-bottom:3px;margin-top:1.6em}
h3{margin:1em 0 .3em}.mono,code,.digest{font-family:"DejaVu Sans Mono",monospace;font-size:.86em}
.digest{word-break:break-all}.note{color:#57606a}a{color:#0969da}
table{border-collapse:collapse;width:100%;margin:.4em 0}th,td{border:1px solid #d0d7de;padding:3px 6px;
text-align:left;vertical-align:top}td{overflow-wrap:anywhere}thead th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
.st-passing{background:#1a7f37;color:#fff}.st-partial{background:#f5d547;color:#3b2300}
.st-failing{background:#cf222e;color:#fff}.st-stale{background:#8250df;color:#fff}
.st-missing{background:#d0d7de;color:#24292f}.st-not-applicable{background:#fff;color:#57606a;border-style:dashed!important}
.badge{display:inline-block;padding:0 6px;border-radius:9px;font-size:.82em;border:1px solid #8c959f}
.bar{display:flex;height:14px;border:1px solid #d0d7de;border-radius:3px;overflow:hidden;margin:.4em 0}
.bar span{flex:0 0 0;border:0}.legend .badge{margin-right:4px}
.heatmap{display:flex;flex-wrap:wrap;gap:3px;margin:.3em 0}
.heatmap .group{flex-basis:100%;font-size:.85em;color:#57606a;margin-top:.4em}
.cell{display:flex;flex-direction:column;justify-content:center;width:86px;height:38px;border:1px solid #8c959f;
border-radius:3px;text-decoration:none;text-align:center;font-size:11px;overflow:hidden}
.cell .rid{font-weight:bold;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;padding:0 2px}
.cell .lbl{font-size:10px}.cell:focus,.cell:hover{outline:2px solid #0969da}
.lists{display:grid;grid-template-columns:repeat(3,1fr);gap:12px}.lists ul{padding-left:18px;margin:0;
max-height:320px;overflow:auto}.lists li{margin-bottom:3px}.none{color:#57606a}
details{border:1px solid #d0d7de;border-radius:4px;margin:3px 0}summary{cursor:pointer;padding:3px 8px}
details[open]>summary{background:#f6f8fa}details>.body{padding:2px 12px 8px}:target{outline:2px solid #0969da}
.nodata{columns:2;font-size:.92em}.res-fail{color:#cf222e;font-weight:bold}.res-unknown{color:#9a6700;font-weight:bold}.res-pass{color:#1a7f37}
@media print{.lists ul{max-height:none}button{display:none}}
"""

_JS = """
(function () {
  function reveal() {
    var id = location.hash.slice(1);
    var el = id && (document.getElementById(id) || document.getElementById(decodeURIComponent(id)));
    for (var e = el; e; e = e.parentElement) { if (e.tagName === "DETAILS") { e.open = true; } }
    if (el) { el.scrollIntoView(); }
  }
  document.querySelectorAll(".bar span").forEach(function (s) { s.style.flexGrow = s.dataset.count; });
  document.querySelectorAll("button[data-toggle]").forEach(function (b) {
    b.addEventListener("click", function () {
      var open = b.dataset.toggle === "open";
      document.querySelectorAll("details").forEach(function (d) { d.open = open; });
    });
  });
  window.addEventListener("hashchange", reveal);
  reveal();
  document.documentElement.setAttribute("data-script", "ran");
})();
"""


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def _page(title: str, body: str) -> str:
    csp = (f"default-src 'none'; style-src {_csp_hash(_CSS)}; script-src {_csp_hash(_JS)}; img-src data:; "
           "base-uri 'none'; form-action 'none'")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<meta name="generator" content="Affidavit {_e(__version__)}">\n<title>{_e(title)}</title>\n'
            f"<style>{_CSS}</style></head>\n<body>\n{body}\n<script>{_JS}</script>\n</body></html>\n")

