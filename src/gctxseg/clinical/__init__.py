"""What a clinic reads from masks: areas and volumes (:mod:`.measurements`), the ETDRS grid (:mod:`.etdrs`,
:mod:`.etdrs_rows`), the macular hole's size (:mod:`.macular_hole`), en-face maps, the read-out of OCT volume files,
agreement with a grader (:mod:`.agreement`) and DICOM out."""
