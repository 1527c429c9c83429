"""ImageNet weight conversion: a torch ResNet (torchvision layout) converted through the same
path gives the same stage features as the Flax backbone."""

import functools

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from tce_jax import models
from tce_jax.models import pretrained
from tce_jax.models.resnet import ResNet

torch = pytest.importorskip('torch', reason='the reference ResNet needs PyTorch '
                            '(pip install torch==2.13.0)')
tnn = torch.nn


class TorchBlock(tnn.Module):
  """torchvision's BasicBlock / Bottleneck (stride on the 3x3 conv), same parameter names."""

  def __init__(self, inplanes, planes, stride, dilation, bottleneck):
    super().__init__()
    self.bottleneck = bottleneck
    out = planes * (4 if bottleneck else 1)
    conv3 = functools.partial(tnn.Conv2d, kernel_size=3, padding=dilation, dilation=dilation,
                              bias=False)
    if bottleneck:
      self.conv1 = tnn.Conv2d(inplanes, planes, 1, bias=False)
      self.conv2 = conv3(planes, planes, stride=stride)
      self.conv3 = tnn.Conv2d(planes, out, 1, bias=False)
      self.bn3 = tnn.BatchNorm2d(out)
    else:
      self.conv1 = conv3(inplanes, planes, stride=stride)
      self.conv2 = conv3(planes, planes)
    self.bn1, self.bn2 = tnn.BatchNorm2d(planes), tnn.BatchNorm2d(out if not bottleneck
                                                                  else planes)
    self.downsample = None
    if stride != 1 or inplanes != out:
      self.downsample = tnn.Sequential(tnn.Conv2d(inplanes, out, 1, stride, bias=False),
                                       tnn.BatchNorm2d(out))

  def forward(self, x):
    y = torch.relu(self.bn1(self.conv1(x)))
    if self.bottleneck:
      y = torch.relu(self.bn2(self.conv2(y)))
      y = self.bn3(self.conv3(y))
    else:
      y = self.bn2(self.conv2(y))
    return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class TorchResNet(tnn.Module):
  """torchvision.models.ResNet without fc, with replace_stride_with_dilation."""

  def __init__(self, blocks, bottleneck, width, dilate):
    super().__init__()
    self.conv1 = tnn.Conv2d(3, width, 7, 2, 3, bias=False)
    self.bn1 = tnn.BatchNorm2d(width)
    self.maxpool = tnn.MaxPool2d(3, 2, 1)
    inplanes, dilation = width, 1
    for i, n in enumerate(blocks):
      stride = 1 if i == 0 else 2
      previous = dilation
      if i > 0 and dilate[i - 1]:
        dilation, stride = dilation * stride, 1
      layer = []
      for j in range(n):
        layer.append(TorchBlock(inplanes, width * 2 ** i, stride if j == 0 else 1,
                                previous if j == 0 else dilation, bottleneck))
        inplanes = width * 2 ** i * (4 if bottleneck else 1)
      setattr(self, f'layer{i + 1}', tnn.Sequential(*layer))
    self.fc = tnn.Linear(inplanes, 10)  # ImageNet head: ignored by the conversion

  def forward(self, x):
    x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
    features = []
    for i in range(4):
      x = getattr(self, f'layer{i + 1}')(x)
      features.append(x)
    return features


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


@pytest.mark.parametrize('depth,blocks,bottleneck', [('resnet18', (2, 2, 2, 2), False),
                                                     ('resnet50', (3, 4, 6, 3), True)])
def test_converted_torch_resnet_gives_same_stage_features(tmp_path, depth, blocks, bottleneck):
  width = 16
  reference = randomized(TorchResNet(blocks, bottleneck, width, dilate=(False, True, True)))
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
  reference = randomized(TorchResNet((2, 2, 2, 2), False, 8, dilate=(False, False, True)))
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
      TorchResNet((2, 2, 2, 2), False, 8, dilate=(False, False, False))).state_dict().items()}
  del state['layer2.0.downsample.0.weight']
  state['layer1.0.conv1.weight'] = np.zeros((8, 8, 5, 5), np.float32)
  state['extra.weight'] = np.zeros(3, np.float32)
  with pytest.raises(ValueError) as error:
    pretrained.convert_state_dict(state, 'resnet18', 8)
  message = str(error.value)
  assert '1 missing: layer2.0.downsample.0.weight' in message
  assert '1 unexpected: extra.weight' in message
  assert 'shape mismatch: layer1.0.conv1.weight' in message
