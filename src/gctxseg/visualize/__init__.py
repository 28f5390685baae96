"""Pictures: mask colours and overlays (:mod:`.colors`) and matplotlib figures as marked PNGs (:mod:`.plots`, the
one place that picks matplotlib's backend)."""
