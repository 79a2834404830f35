"""SLURM as the service uses it, one concept per module (no database here; the job service's side is
`ired_dcd.services.slurm_jobs`):

- `settings`: SlurmSettings, the server's defaults and a job's overrides;
- `sbatch`: the hand-submittable script of `ired-dcd sbatch`;
- `states`: SLURM's states and what each means for a run;
- `cluster`: submit (submitit), find, follow and cancel array jobs;
- `node`: what an array task runs on the compute node.
"""
