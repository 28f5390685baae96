"""Scoring a labelled folder with a trained model: overlap and surface metrics per image and class, worst cases,
and the agreement of the amounts measured."""
