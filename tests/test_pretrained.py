"""ImageNet weight conversion: a torch ResNet (torchvision layout) converted through the same
path gives the same stage features as the Flax backbone."""

import functools

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

from tce_jax.configs import default
from tce_jax import models
from tce_jax.models import pretrained
from tce_jax.models.resnet import ResNet

torch = pytest.importorskip('torch', reason='the reference ResNet needs PyTorch '
                            '(pip install torch==2.13.0)')
tnn = torch.nn
# torchvision's ResNet layout in plain torch (the benchmark's peer; scripts/ is on the path).
from torch_deeplabv3plus import ResNet as TorchResNet  # noqa: E402


def randomized(model):
  torch.manual_seed(0)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, tnn.BatchNorm2d):
        module.weight.uniform_(0.5, 1.5)
        module.bias.uniform_(-0.2, 0.2)
        module.running_mean.uniform_(-0.2, 0.2)
        module.running_var.uniform_(0.5, 1.5)
  return model.eval()


@pytest.mark.parametrize('depth', ['resnet18', 'resnet50'])
def test_converted_torch_resnet_gives_same_stage_features(tmp_path, depth):
  width = 16
  reference = randomized(TorchResNet(depth, width, output_stride=8, with_fc=True))
  from safetensors.torch import save_file  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / 'resnet.safetensors')
  save_file(reference.state_dict(), path)
  variables = pretrained.convert_state_dict(pretrained.load_state_dict(path), depth, width)
  pretrained.save_backbone(variables, str(tmp_path / 'ckpt'))
  variables = pretrained.load_backbone(str(tmp_path / 'ckpt'))

  x = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)
  with torch.no_grad():
    expected = [f.numpy().transpose(0, 2, 3, 1) for f in reference(torch.from_numpy(x))]
  model = ResNet(depth, width, output_stride=8,
                 norm=functools.partial(nn.BatchNorm, use_running_average=True))
  features = model.apply(variables, jnp.asarray(x.transpose(0, 2, 3, 1)))
  for got, want in zip(features, expected):
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_pth_files_and_pretrained_config(tmp_path):
  reference = randomized(TorchResNet('resnet18', 8, output_stride=16, with_fc=True))
  path = str(tmp_path / 'resnet.pth')
  torch.save({'state_dict': reference.state_dict()}, path)
  variables = pretrained.convert_state_dict(pretrained.load_state_dict(path), 'resnet18', 8)
  pretrained.save_backbone(variables, str(tmp_path / 'ckpt'))
  config = default.get_config()
  config.model.update(backbone='resnet18', width=8, aspp_channels=8, decoder_channels=8)
  model = models.create_model(config, 3, train=False)
  import jax  # pylint: disable=g-import-not-at-top
  init = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False)
  loaded = pretrained.apply_backbone(init, pretrained.load_backbone(str(tmp_path / 'ckpt')))
  np.testing.assert_array_equal(loaded['params']['backbone']['conv1']['kernel'],
                                reference.conv1.weight.detach().numpy().transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(loaded['batch_stats']['backbone']['layer4_1']['bn2']['var'],
                                reference.layer4[1].bn2.running_var.numpy())
  config.model.width = 16
  wider = models.create_model(config, 3, train=False).init(
      jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False)
  with pytest.raises(ValueError, match='does not fit config.model'):
    pretrained.apply_backbone(wider, pretrained.load_backbone(str(tmp_path / 'ckpt')))


def test_wrong_weights_list_every_problem():
  state = {k: v.numpy() for k, v in randomized(
      TorchResNet('resnet18', 8, output_stride=32, with_fc=True)).state_dict().items()}
  del state['layer2.0.downsample.0.weight']
  state['layer1.0.conv1.weight'] = np.zeros((8, 8, 5, 5), np.float32)
  state['extra.weight'] = np.zeros(3, np.float32)
  with pytest.raises(ValueError) as error:
    pretrained.convert_state_dict(state, 'resnet18', 8)
  message = str(error.value)
  assert '1 missing: layer2.0.downsample.0.weight' in message
  assert '1 unexpected: extra.weight' in message
  assert 'shape mismatch: layer1.0.conv1.weight' in message
