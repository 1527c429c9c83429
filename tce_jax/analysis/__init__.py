"""Results: loading and aggregating runs (`runs`), the tables (`tables`), the figures (a
registry, `registry`, and one module per figure under `figures/`, sharing `style` and the
label placement of `placement`), and the stored predictions (`predictions`).
`tce_jax.report` assembles them into a report."""
