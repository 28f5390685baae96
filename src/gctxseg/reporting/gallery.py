"""``index.html`` of a predictions folder: every overlay with its measurements, sortable and filterable.

One self-contained page (inline CSS and script, nothing fetched from the network) beside ``masks/`` and
``overlays/``: the overlays are linked, not embedded, and lazy-loaded (``loading="lazy"``), so a folder of a
few thousand B-scans opens at once and loads pictures as they scroll into view. Click a column header to
sort by it (again to reverse); the select box keeps the rows with a class present. The same state can be
given in the address, ``index.html?sort=COLUMN&order=desc&present=N`` (N: class number 1, 2 ...), to share
a view (and to test it).
On a narrow screen (a phone) the table scrolls sideways and the thumbnails shrink.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

from ..clinical.measurements import Measurement, measurement_record
from ..core.files import atomic_write_text
from ..data.io import file_stem

__all__ = ["write_gallery"]

_CSS = """
body { font-family: system-ui, sans-serif; margin: 12px; color: #222; }
h1 { font-size: 1.3em; margin: 0 0 8px; }
.controls { margin: 8px 0; display: flex; flex-wrap: wrap; gap: 12px; align-items: center; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: right; white-space: nowrap; }
th { background: #f2f2f2; cursor: pointer; position: sticky; top: 0; user-select: none; }
th[data-order="asc"]::after { content: " \\25B2"; } th[data-order="desc"]::after { content: " \\25BC"; }
td.file, th.file, th:first-child { text-align: left; }
img.overlay { width: 160px; max-width: 35vw; height: auto; display: block; }
.note { color: #666; font-size: 0.85em; }
h2 { font-size: 1.1em; } .maps { display: flex; flex-wrap: wrap; gap: 12px; }
img.enface { width: 420px; max-width: 90vw; }
figure { margin: 0; } figcaption { font-size: 0.85em; color: #444; }
"""

# sort/filter and the ?sort=&order=&present= state; sets <body data-rows-shown="N">, data-images-loaded and
# data-page-fits (for headless checks)
_JS = r"""
const table = document.getElementById('measurements'), body = table.tBodies[0];
const heads = [...table.tHead.rows[0].cells], select = document.getElementById('present');
function cellValue(row, i) {
  const v = row.cells[i].dataset.value; return v === undefined ? row.cells[i].textContent : v;
}
function sortBy(column, order) {
  const i = heads.findIndex(h => h.dataset.column === column); if (i < 0) return;
  const rows = [...body.rows], sign = order === 'desc' ? -1 : 1;
  rows.sort((a, b) => {
    const x = cellValue(a, i), y = cellValue(b, i), nx = parseFloat(x), ny = parseFloat(y);
    if (x === '' || y === '') return (x === '') - (y === '');  // blanks (unknown) last either way
    return sign * (isNaN(nx) || isNaN(ny) ? x.localeCompare(y, undefined, {numeric: true}) : nx - ny);
  });
  rows.forEach(r => body.appendChild(r));
  heads.forEach(h => delete h.dataset.order); heads[i].dataset.order = order;
}
function filterPresent(name) {
  let shown = 0;
  for (const row of body.rows) {
    const keep = !name || parseFloat(row.dataset['px' + name] || '0') > 0;
    row.hidden = !keep; shown += keep;
  }
  document.body.dataset.rowsShown = shown;
}
heads.forEach(h => h.addEventListener('click',
  () => sortBy(h.dataset.column, h.dataset.order === 'asc' ? 'desc' : 'asc')));
select.addEventListener('change', () => filterPresent(select.value));
const query = new URLSearchParams(location.search);
if (query.get('sort')) sortBy(query.get('sort'), query.get('order') || 'asc');
if (query.get('present')) select.value = query.get('present');
filterPresent(select.value);
window.addEventListener('load', () => {
  const imgs = [...document.images], loaded = imgs.filter(i => i.complete && i.naturalWidth > 0);
  document.body.dataset.imagesLoaded = loaded.length + '/' + imgs.length;
  // the page itself never scrolls sideways (only the table does): readable on a phone without zooming
  document.body.dataset.pageFits = document.documentElement.scrollWidth <= window.innerWidth;
});
"""


def _shown(text: str) -> str:
    """A measurement as shown: 4 significant digits for mm values (the exact number stays in data-value)."""
    try:
        return text if "." not in text else format(float(text), ".4g")
    except ValueError:
        return text


def _cell(text: str, css: str = "") -> str:
    cls = f' class="{css}"' if css else ""
    return f'<td{cls} data-value="{html.escape(text)}">{html.escape(_shown(text))}</td>'


def _row(row: Measurement, names: Sequence[str], columns: Sequence[str], masks: Mapping[Path, Path], out: Path) -> str:
    record = measurement_record(row, names)
    # the mask predict wrote for this source names its overlay too (masks/a.jpg.png -> overlays/a.jpg.png)
    mask = masks.get(row.members[0]) if row.kind in ("image", "volume") else None
    overlay = out / "overlays" / f"{file_stem(mask)}.png" if mask is not None else None
    picture = ""
    if overlay is not None and overlay.is_file():
        src = html.escape(quote(f"overlays/{overlay.name}"))  # '#', '?', '%' and spaces in a name: one file
        picture = f'<a href="{src}"><img class="overlay" loading="lazy" src="{src}" alt="{html.escape(row.file)}"></a>'
    link = f'<a href="{html.escape(quote(f"masks/{mask.name}"))}">{html.escape(mask.name)}</a>' if mask else ""
    # attribute names are lower-cased by HTML parsers: classes go by number (data-px1 ...), not by name
    present = "".join(f' data-px{c}="{html.escape(record[f"{n}_pixels"] or "0")}"' for c, n in enumerate(names, 1))
    cells = [f"<td>{picture}</td>"] + [_cell(record[c], "file" if c == "file" else "") for c in columns]
    return f"<tr{present}>" + "".join(cells) + f'<td class="file">{link}</td></tr>'


def write_gallery(
    out: str | Path, rows: Sequence[Measurement], class_names: Sequence[str], masks: Mapping[Path, Path] | None = None,
    maps: Mapping[str, Path] | None = None,
) -> Path:  # fmt: skip
    """Write ``out/index.html`` for the measured rows (``masks``: source file -> the mask predict wrote; its
    overlay is ``out/overlays`` under the mask's stem; ``maps``: volume -> its en-face map, shown above).

    Returns:
        the path written.
    """
    out = Path(out)
    columns = ["file", "kind"] + [f"{n}_{w}" for n in class_names for w in ("pixels", "area_mm2", "volume_mm3")]
    records = [measurement_record(r, class_names) for r in rows]
    # a column blank in every row (volumes of single B-scans, areas without a spacing) only takes room
    columns = [c for c in columns if c in ("file", "kind") or any(rec[c] for rec in records)]
    head = "<th>overlay</th>" + "".join(
        f'<th data-column="{html.escape(c)}"{" class=file" if c == "file" else ""}>{html.escape(c)}</th>'
        for c in columns
    ) + '<th class="file">mask</th>'
    options = '<option value="">all rows</option>' + "".join(
        f'<option value="{c}">with {html.escape(n)}</option>' for c, n in enumerate(class_names, 1)
    )
    body = "\n".join(_row(r, class_names, columns, masks or {}, out) for r in rows)
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>gctxseg predictions: {html.escape(out.name)}</title><style>{_CSS}</style></head>\n<body>\n"
        f"<h1>Predictions in {html.escape(str(out))} ({len(rows)} rows)</h1>\n"
        f'<div class="controls"><label>show <select id="present">{options}</select></label>'
        '<a href="measurements.csv">measurements.csv</a>'
        '<span class="note">click a column to sort; blank = unknown; all columns in measurements.csv</span></div>\n'
        f"{_enface_section(out, maps or {})}"
        f'<div class="scroll"><table id="measurements"><thead><tr>{head}</tr></thead><tbody>\n{body}\n'
        f"</tbody></table></div>\n<script>{_JS}</script>\n</body></html>\n"
    )
    path = out / "index.html"
    atomic_write_text(path, page)
    return path


def _enface_section(out: Path, maps: Mapping[str, Path]) -> str:
    """The volumes' en-face fluid maps with the ETDRS grid, and the link to ``etdrs.csv``."""
    if not maps:
        return ""
    figures = "".join(
        f'<figure><img class="enface" src="{html.escape(quote(path.relative_to(out).as_posix()))}" '
        f'alt="en-face fluid map of {html.escape(name)}"><figcaption>{html.escape(name)}</figcaption></figure>'
        for name, path in maps.items()
    )
    return (f'<h2>Volumes: fluid in the ETDRS grid (<a href="etdrs.csv">etdrs.csv</a>)</h2>'
            f'<div class="maps">{figures}</div>\n')


