"""What a clinic reads from masks: areas and volumes (:mod:`.measurements`), the ETDRS grid (:mod:`.etdrs`,
:mod:`.etdrs_rows`), en-face maps, the read-out of OCT volume files, agreement with a grader and DICOM out."""
