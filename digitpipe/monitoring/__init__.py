"""Monitoring a model in the field, in one package, a module per concern (none imported here, so `score` loads only
what it uses): features.py (what each digit image looks like), drift.py (the reference of a model's training data,
a batch's profile and PSI verdict, the drift report), feedback.py (labelled digits that came back: joined to the
scored file, held out, trained on), alarms.py (what a batch or its labels raise, the events' names, and recording
feedback and alarms in the store)."""
