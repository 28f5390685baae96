"""What a person reads after a run: ``report.html``, the gallery of a prediction and runs compared side by side."""
