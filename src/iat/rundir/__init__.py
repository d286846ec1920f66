"""Run directories, the folders `iat train` writes and every other command reads, one subject a module:

- files: the files' names (config.json, model.safetensors, ...), atomic writes, leftover temporaries, JSON;
- tensors: weights and the training checkpoint, saved atomically, loaded without running code;
- outdir: an output path checked before anything is created, then held by one writer at a time;
- read: a finished run read back (its config, its model, several runs on one test set);
- evals: eval.json and the history of every evaluation of a run.

The package imports none of them: files and outdir need only the standard library and tensors torch, while
read builds models and loads data, so `from iat.rundir import files` stays light.
"""
