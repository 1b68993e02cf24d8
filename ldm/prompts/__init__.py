"""Prompts as AUTOMATIC1111 users write them: attention weights and BREAK (syntax), prompt
editing and alternation over the sampling steps (schedule), and the 75-token chunks a long
prompt is encoded in (chunks). Pure Python: the text side (ldm.models.text_conditioner)
encodes what these return, the pipeline schedules it."""
