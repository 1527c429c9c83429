"""Every configuration field, with its default. Experiment configs override a few of them.

Any field can also be set on the command line, e.g. `--config.train.num_steps=200`.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.name = 'default'  # run label used by reports; experiment files set their own
  config.seed = 0  # seeds the model init, the data order, augmentation and class draws
  config.half_precision = False  # bf16 activations/matmuls; params, BN stats and loss in f32
  _add_data_fields(config)
  _add_model_fields(config)
  _add_method_fields(config)
  _add_evaluation_fields(config)
  _add_training_fields(config)
  return config


def _add_data_fields(config: ml_collections.ConfigDict) -> None:
  """The dataset and the input pipeline."""
  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = 'synthetic'  # one of tce_jax.data.datasets.DATASETS
  # tfds data_dir of the prepared datasets; None = ~/tensorflow_datasets.
  config.dataset.data_dir = ml_collections.FieldReference(None, field_type=str)
  config.dataset.train_split = 'train'
  config.dataset.eval_split = 'validation'
  # Sizes of the built-in synthetic dataset (ignored by the real datasets); `profile` 'v3'
  # (the benchmark) draws people and two-wheelers by their parts, with every size scaled to
  # the image; 'v1' (the first benchmark, at 128 x 256 with 300 validation images) draws thin
  # objects with fixed pixel sizes, 'v2' scales them (docs/synthetic_dataset.md).
  config.dataset.synthetic = ml_collections.ConfigDict(dict(
      num_train=2000, num_validation=500, height=256, width=512, seed=0, profile='v3'))

  config.input = ml_collections.ConfigDict()
  config.input.crop_size = (128, 128)  # training crop (height, width); images are padded to it
  config.input.scales = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)  # random rescale factors
  config.input.flip = True  # random horizontal flip
  # mmsegmentation-style rescaling instead of `scales`: fit into base_size (long, short)
  # times r ~ U(ratio_range), keeping the aspect ratio. None = use `scales`.
  config.input.base_size = ml_collections.FieldReference(None, field_type=tuple)
  config.input.ratio_range = (0.5, 2.0)
  config.input.photometric = False  # brightness / contrast jitter
  # (long, short): keep-ratio resize for evaluation (ADE20k: (2048, 512)); None = full size.
  config.input.eval_size = ml_collections.FieldReference(None, field_type=tuple)
  config.input.eval_batch_size = 8  # global batch of the evaluation (padded at the end)
  config.input.num_threads = 2  # host threads that load and augment batches
  # Replace (and count) unreadable / invalid training records instead of stopping.
  config.input.skip_bad_records = False
  config.input.prefetch = 2  # batches prepared ahead of the device (uniform sampling)
  # Decoded records kept in host memory after their first read, per split and process, up to
  # this many GiB (0: none): the synthetic dataset is then decoded once, not at every step.
  config.input.memory_cache_gb = 2.0


def _add_model_fields(config: ml_collections.ConfigDict) -> None:
  """The network."""
  config.model = ml_collections.ConfigDict()
  config.model.name = 'deeplabv3plus'  # deeplabv3plus or upernet (tce_jax.models.MODELS)
  config.model.backbone = 'resnet101'  # resnet18/34/50/101/152
  config.model.width = 64  # stem width of the ResNet (64 = standard; smaller for tests)
  config.model.output_stride = 16  # backbone output stride in training (8, 16 or 32)
  config.model.eval_output_stride = 16  # output stride at evaluation
  config.model.multi_grid = (1, 1, 1)  # dilation multipliers of the last stage's blocks
  config.model.aspp_channels = 256
  config.model.decoder_channels = 256
  config.model.upernet_channels = 512  # UPerNet: PPM / FPN / fusion channels
  config.model.aux_channels = 256  # UPerNet: auxiliary FCN head on stage 3
  config.model.aux_weight = 0.4  # weight of the auxiliary head's loss (models that have one)
  config.model.dropout = 0.1  # before the classifier (after the ASPP projection in DeepLabv3+)
  config.model.bn_momentum = 0.9  # running-average decay (torch momentum 0.1)
  config.model.freeze_bn = False  # use running statistics in training (small per-device batch)
  # Orbax checkpoint of ImageNet backbone weights (scripts/convert_resnet.py), or 'none' to
  # train from scratch on purpose; None = not set (random init, unless require_pretrained).
  config.model.pretrained = ml_collections.FieldReference(None, field_type=str)
  # True in the real-dataset configs: the paper's recipes start from ImageNet weights, so a
  # run without model.pretrained is refused (pass --config.model.pretrained=none to really
  # train from scratch; the run records it).
  config.model.require_pretrained = False


def _add_method_fields(config: ml_collections.ConfigDict) -> None:
  """The fairness method: the loss, the sampler and the tilt they share."""
  config.loss = ml_collections.ConfigDict()
  config.loss.name = 'mcce'  # a name of tce_jax.losses.LOSSES
  config.loss.focal_gamma = 2.0  # focusing parameter of the focal losses
  # OHEM (loss 'ohem', mmsegmentation's OHEMPixelSampler): pixels whose probability of their
  # label is below max(ohem_thresh, the (k+1)-th smallest of the batch) are kept, k =
  # ohem_min_kept x images. mmsegmentation's Cityscapes value, 100,000 per 512 x 1024 crop
  # (19% of it), scaled to the 128 x 128 crops of the synthetic configs: 3,125.
  config.loss.ohem_thresh = 0.7
  config.loss.ohem_min_kept = 3125
  # Deprecated: moved to config.tce.t_warmup_steps (still read, with a warning).
  config.loss.t_warmup_steps = ml_collections.FieldReference(None, field_type=int)

  config.sampling = ml_collections.ConfigDict()
  # A name of tce_jax.sampling.SAMPLERS: uniform = shuffled epochs; tce = Algorithm 1
  # (Stochastic TCE).
  config.sampling.name = 'uniform'
  # Class-conditional samplers: the class of step k is drawn after step k - lag, so the loader
  # prepares its batch while the device runs the steps in between.
  config.sampling.lag = 2
  # D_c holds the images with more than this many pixels of class c (0: any pixel, the
  # paper). DAFormer's rare class sampling: 3,000 at 1024 x 512 (0.57% of the image); 750 is
  # that fraction of the synthetic benchmark's 256 x 512 images (configs/synthetic_rcs.py).
  config.sampling.min_pixels = 0
  # Class-aware crops (class-conditional samplers): while the random crop holds fewer than
  # `min_pixels` pixels of the drawn class, redraw the augmentation (scale, crop, flip), up to
  # `retries` times, the last redraw placing the crop on the class (DAFormer's rule, whose
  # last redraw is unchecked). 0 retries: off (the paper). DAFormer: 10 retries, 1,500 pixels
  # of a 512 x 512 crop (0.57%); 94 is that fraction of the synthetic 128 x 128 crops.
  config.sampling.class_crop = ml_collections.ConfigDict(dict(retries=0, min_pixels=94))
  # Rare class sampling ('rcs', DAFormer): p(c) = softmax((1 - f_c) / temperature), f_c the
  # pixel frequency of class c in the training split.
  config.sampling.rcs_temperature = 0.01

  config.tce = ml_collections.ConfigDict()  # the tilt, shared by the sampler and the losses
  config.tce.t = 0.1  # tilt of the sampler and of the direct tilted losses; 0 = no tilt
  config.tce.t_warmup_steps = 0  # tilted losses: ramp t linearly from 0 over these steps
  config.tce.gamma = 0.2  # EMA rate of the sampler's tilted losses (TERM's code uses 0.2)
  # What updates the EMA of the drawn class c (Algorithm 1, line 7): 'batch' = the batch's
  # mean CE (the paper), 'class' = the batch's mean CE over the pixels labelled c.
  config.tce.signal = 'batch'
  # Class-size prior of the sampler: w_c proportional to |D_c|^size_prior x T_c (TERM's
  # class-imbalance weighting uses 1); 0 = the paper.
  config.tce.size_prior = 0.0


def _add_evaluation_fields(config: ml_collections.ConfigDict) -> None:
  """Evaluation: the protocol and the reports."""
  config.eval = ml_collections.ConfigDict()
  config.eval.scales = (1.0,)  # multi-scale inference: softmax averaged over these rescales
  config.eval.flip = False  # also average over horizontally flipped inputs
  # Scored resolution when input.eval_size resizes the images: 'resized' (labels resized with
  # the images, nearest) or 'original' (predictions resized back to each label's original
  # size, bilinear on the logits / averaged probabilities: mmsegmentation's ADE20k protocol).
  config.eval.resolution = 'resized'
  # 'whole' image inference, or 'slide': windows of eval.window (h, w) every eval.stride
  # (h, w), overlapping logits averaged (mmsegmentation's test_cfg mode='slide').
  config.eval.mode = 'whole'
  config.eval.window = ml_collections.FieldReference(None, field_type=tuple)
  config.eval.stride = ml_collections.FieldReference(None, field_type=tuple)
  # Canvas sides images are padded to, so that evaluation compiles one program per canvas;
  # None = 2^k and 1.5 * 2^k (pipeline.CANVAS_SIDES).
  config.eval.canvas_sides = ml_collections.FieldReference(None, field_type=tuple)
  # Validation images shown in TensorBoard at each evaluation (image | ground truth |
  # prediction; the first images of the first evaluation batch); 0: none.
  config.eval.preview_images = 3
  config.eval.fairness_fraction = 0.25  # bottom/top fraction of the fairness stats (ADE20k: 0.15)


def _add_training_fields(config: ml_collections.ConfigDict) -> None:
  """The optimizer, the schedule and the loop."""
  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 8  # global batch, split over all devices
  config.train.num_steps = 1000
  # 'sgd' (momentum, L2 added to the gradient: the paper) or 'adamw' (decoupled weight decay,
  # beta1 = train.momentum); train.learning_rate and the poly schedule apply to both.
  config.train.optimizer = 'sgd'
  config.train.learning_rate = 0.01
  config.train.momentum = 0.9
  config.train.poly_power = 0.9  # lr = base * (1 - step / num_steps) ** power
  config.train.weight_decay = 5e-4  # L2 on all params, added to the gradient (as torch SGD)
  # Clip gradients to this global norm; None = no clipping.
  config.train.grad_clip_norm = ml_collections.FieldReference(None, field_type=float)
  # Non-finite loss or gradients: 'stop' (only finite checkpoints are kept) or 'skip' the
  # update and count it.
  config.train.nonfinite = 'stop'
  config.train.log_every = 50  # steps between training metric summaries
  config.train.eval_every = 500  # steps between evaluations (and at the end)
  config.train.checkpoint_every = 500  # steps between checkpoints (and at the end)
  config.train.keep_checkpoints = 3  # checkpoints kept on disk
