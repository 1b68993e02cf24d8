"""Quality evaluation of text-to-image models on the procedural scenes domain.

An attribute classifier, trained only on real scenes (never on model outputs), reads what a
generated image shows; prompts built from scene captions say what it should show. See
tools/evaluate.py for the command and tools/train_attribute_classifier.py for the classifier.
"""
