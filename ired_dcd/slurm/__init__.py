"""SLURM as the service uses it, one concept per module (no database here; the job service's side is
`ired_dcd.services.slurm_jobs`):

- `settings`: SlurmSettings, the server's defaults and a job's overrides;
- `sbatch`: the script every submission is, by hand (`ired-dcd sbatch`) or by the server: its tasks
  run `ired-dcd train`;
- `states`: SLURM's states and what each means for a run;
- `cluster`: submit scripts, find, follow and cancel jobs.
"""
