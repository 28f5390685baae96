"""Scoring a labelled folder: a trained model's predictions or a folder of predicted masks (:mod:`.evaluate`), the
B-scans of OCT volume files (:mod:`.volume_files`); what every evaluation pools and writes (:mod:`.results`):
overlap and surface metrics per image and class, worst cases, and the agreement of the amounts measured."""
