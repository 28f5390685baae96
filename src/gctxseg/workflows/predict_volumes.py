"""``predict``'s OCT volume files: each volume's B-scans segmented, measured on its own geometry and written as
masks, an overlay and (where highdicom is installed) a DICOM SEG and report."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..clinical.volume_readout import VolumeFile, VolumeResult, volume_readout
from ..data.errors import DatasetError
from ..data.oct_volumes import OctVolume, bscan_input, raster_layout, read_oct_volume

__all__ = ["predict_volume_files", "say_geometry"]


def predict_volume_files(
    predictor, volumes: Sequence[VolumeFile], out: Path, class_names: Sequence[str], columns_eye: str | None,
    overlay: Callable[[np.ndarray, np.ndarray], np.ndarray], dicom_codes: Mapping | None = None,
) -> tuple[list[VolumeResult], list[str]]:
    """Segment each volume's B-scans into ``out/masks/NAME/bSSS.png`` (file order, the model's mask values) and
    ``out/overlays/NAME.png`` (the B-scan with the most foreground); measure them with :func:`volume_readout`.
    With ``dicom_codes`` (class name -> :class:`~gctxseg.clinical.dicom_out.ClassCode`, maybe empty; None writes no
    DICOM) also ``out/dicom/NAME_seg.dcm`` and ``NAME_sr.dcm`` (:func:`gctxseg.clinical.dicom_out.write_dicom_objects`).
    Returns the results and one line per volume (or DICOM object) that failed (the others go on)."""
    results, failed = [], []
    for planned in volumes:
        try:
            volume = read_oct_volume(planned.path)
            inputs = [bscan_input(predictor.intensity, b) for b in volume.bscans]
            labels = np.stack([predictor.predict_image(x, f"{planned.path} (B-scan {k})")
                               for k, x in enumerate(inputs)])
            folder = out / "masks" / planned.name
            folder.mkdir(parents=True, exist_ok=True)
            width = max(3, len(str(len(labels) - 1)))
            for k, pred in enumerate(labels):
                Image.fromarray(predictor.value_map.decode(pred)).save(folder / f"b{k:0{width}d}.png")
            shown = int((labels > 0).reshape(len(labels), -1).sum(1).argmax())
            Image.fromarray(overlay(inputs[shown], labels[shown])).save(out / "overlays" / f"{planned.name}.png")
            row, report = volume_readout(volume, labels, class_names, columns_eye, planned.name)
            results.append(VolumeResult(row, report, folder))
            if dicom_codes is not None:
                failed += _write_dicom(volume, labels, report.record, class_names, out / "dicom", planned.name,
                                       dicom_codes)
        except KeyboardInterrupt:
            raise
        except DatasetError as err:
            failed.append(str(err))
        except Exception as err:  # one volume's failure (memory, a decoder) does not stop the others
            failed.append(f"{planned.path}: {type(err).__name__}: {err}".splitlines()[0])
    return results, failed



def _write_dicom(volume: OctVolume, labels: np.ndarray, record: dict, class_names: Sequence[str], folder: Path,
                 name: str, codes: Mapping) -> list[str]:
    """The volume's DICOM SEG and SR; returns the line of a failure (a volume without a pixel spacing gets a note
    on stderr instead: its read-out is in pixels, and a DICOM image without a ruler is not written)."""
    from ..clinical.dicom_out import NoDicomImage, write_dicom_objects

    try:
        _, notes = write_dicom_objects(volume, labels, record, class_names, raster_layout(volume), folder, name, codes)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
    except NoDicomImage as err:
        print(f"note: {err}", file=sys.stderr)
    except DatasetError as err:
        return [str(err)]
    except Exception as err:  # highdicom refusing this volume (e.g. B-scans not parallel): the others go on
        line = f"{type(err).__name__}: {err}".splitlines()[0]
        return [f"{volume.path}: DICOM SEG/SR not written ({line}); its masks and etdrs.csv row are kept"]
    return []



def say_geometry(volumes: Sequence[VolumeFile]) -> None:
    """The run's geometry lines (one per volume file), as ``predict`` says its pixel spacing."""
    for planned in volumes:
        print(f"geometry: {planned.line}", file=sys.stdout)
