"""The scenes demo in one home: the procedural scene generator (generator, draw), its
attribute judge (a classifier trained on real scenes only), evaluation prompts, scoring and report.

An attribute classifier, trained only on real scenes (never on model outputs), reads what a
generated image shows; prompts built from scene captions say what it should show. See
tools/evaluate.py for the command and tools/train_attribute_classifier.py for the classifier.
"""
