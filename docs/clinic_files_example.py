"""Write a phantom eye as a HEYEX VOL (Spectralis order: B-scan 0 inferior) and as a DICOM OPT file."""
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' file builders
from helpers_clinic_files import write_opt_dicom, write_vol  # the tests' builders

from gctxseg.clinical.volume_readout import describe_volume, volume_readout
from gctxseg.data import MaskValueMap
from gctxseg.data.oct_volumes import raster_layout, read_oct_volume
from gctxseg.data.phantom_volume import synthesize_volumes

done = synthesize_volumes("eyes", n=1, shape=(32, 64, 96), seed=3)
images = np.stack([np.asarray(Image.open(f"eyes/images/eye000_b{s:03d}.jpg")) for s in range(32)])
labels = np.stack([MaskValueMap((0, 128, 255)).encode(np.asarray(Image.open(f"eyes/masks/eye000_b{s:03d}.png")))
                   for s in range(32)])
Path("exams").mkdir()
write_vol(Path("exams/eye000.vol"), images, done, "OD")
write_opt_dicom(Path("exams/eye000_os.dcm"), images, done, "L")
for path, order in (("exams/eye000.vol", labels[::-1]), ("exams/eye000_os.dcm", labels)):
    volume = read_oct_volume(path)
    print("geometry:", describe_volume(volume, raster_layout(volume)))
    row, report = volume_readout(volume, order, ("edema", "hole"), columns_eye="OD")
    print({k: v for k, v in report.record.items() if v and not k.startswith("edema_outer")})
print(json.dumps(json.load(open("eyes/truth.json"))["eye000"]["fluid_nl"]))
