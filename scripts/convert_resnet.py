"""Converts an ImageNet ResNet (torchvision or timm state dict) into a backbone checkpoint.

  python scripts/convert_resnet.py --input=resnet101.safetensors --depth=resnet101 \
      --output=weights/resnet101_imagenet
then train with --config.model.pretrained=weights/resnet101_imagenet.

`.safetensors` needs no PyTorch; `.pth` does. Missing, unexpected or mis-shaped tensors are
all listed in the error; nothing is skipped silently.
"""

from absl import app
from absl import flags

from tce_jax.models import pretrained
from tce_jax.models.resnet import RESNETS

FLAGS = flags.FLAGS
flags.DEFINE_string('input', None, 'torchvision / timm ResNet state dict (.safetensors or .pth).')
flags.DEFINE_enum('depth', 'resnet101', list(RESNETS), 'Which ResNet the file holds.')
flags.DEFINE_integer('width', 64, 'Stem width (64 for the standard nets).')
flags.DEFINE_string('output', None, 'Directory of the orbax checkpoint to write.')
flags.mark_flags_as_required(['input', 'output'])


def main(argv):
  del argv
  try:
    variables = pretrained.convert_state_dict(pretrained.load_state_dict(FLAGS.input),
                                              FLAGS.depth, FLAGS.width)
  except (ValueError, FileNotFoundError, ImportError) as e:
    raise SystemExit(f'Error: {e}') from e
  pretrained.save_backbone(variables, FLAGS.output)
  print(f'Wrote {FLAGS.depth} backbone weights to {FLAGS.output}')


if __name__ == '__main__':
  app.run(main)
