"""The commands' end-to-end steps: train then report, predict then measure and draw the gallery, the demo."""
