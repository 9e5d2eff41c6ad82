"""The classic PyTorch MNIST example (pytorch/examples mnist/main.py) runs on graphc with only
its imports changed: eagerly as written, and with its training step under torch.compile
(graphc.compile), on MNIST-shaped IDX files this test writes where the script looks for
them (../data/MNIST/raw, torchvision's layout).

The script is PyTorch's: conv 32/64, Dropout, log_softmax and nll_loss, Adadelta with
StepLR(gamma=0.7), train and test loops with model.train()/model.eval() and
torch.no_grad(), argparse, torchvision's datasets and transforms, torch.utils.data's
DataLoader, devices and saving the state dict.
"""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

IMPORTS = """\
import graphc as torch
import graphc.nn as nn
import graphc.nn.functional as F
import graphc.optim as optim
from graphc.vision import datasets, transforms
from graphc.optim.lr_scheduler import StepLR
"""

EXAMPLE = """\
import argparse
{imports}

class Net(nn.Module):
    def __init__(self):
        super(Net, self).__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = self.conv1(x)
        x = F.relu(x)
        x = self.conv2(x)
        x = F.relu(x)
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = self.fc1(x)
        x = F.relu(x)
        x = self.dropout2(x)
        x = self.fc2(x)
        output = F.log_softmax(x, dim=1)
        return output

{train}

def test(model, device, test_loader):
    model.eval()
    test_loss = 0
    correct = 0
    with torch.no_grad():
        for data, target in test_loader:
            data, target = data.to(device), target.to(device)
            output = model(data)
            test_loss += F.nll_loss(output, target, reduction='sum').item()  # sum up batch loss
            pred = output.argmax(dim=1, keepdim=True)  # get the index of the max log-probability
            correct += pred.eq(target.view_as(pred)).sum().item()

    test_loss /= len(test_loader.dataset)

    print('\\nTest set: Average loss: {{:.4f}}, Accuracy: {{}}/{{}} ({{:.0f}}%)\\n'.format(
        test_loss, correct, len(test_loader.dataset),
        100. * correct / len(test_loader.dataset)))


def main():
    # Training settings
    parser = argparse.ArgumentParser(description='PyTorch MNIST Example')
    parser.add_argument('--batch-size', type=int, default=64, metavar='N',
                        help='input batch size for training (default: 64)')
    parser.add_argument('--test-batch-size', type=int, default=1000, metavar='N',
                        help='input batch size for testing (default: 1000)')
    parser.add_argument('--epochs', type=int, default=14, metavar='N',
                        help='number of epochs to train (default: 14)')
    parser.add_argument('--lr', type=float, default=1.0, metavar='LR',
                        help='learning rate (default: 1.0)')
    parser.add_argument('--gamma', type=float, default=0.7, metavar='M',
                        help='Learning rate step gamma (default: 0.7)')
    parser.add_argument('--no-cuda', action='store_true', default=False,
                        help='disables CUDA training')
    parser.add_argument('--no-mps', action='store_true', default=False,
                        help='disables macOS GPU training')
    parser.add_argument('--dry-run', action='store_true', default=False,
                        help='quickly check a single pass')
    parser.add_argument('--seed', type=int, default=1, metavar='S',
                        help='random seed (default: 1)')
    parser.add_argument('--log-interval', type=int, default=10, metavar='N',
                        help='how many batches to wait before logging training status')
    parser.add_argument('--save-model', action='store_true', default=False,
                        help='For Saving the current Model')
    args = parser.parse_args()
    use_cuda = not args.no_cuda and torch.cuda.is_available()
    use_mps = not args.no_mps and torch.backends.mps.is_available()

    torch.manual_seed(args.seed)

    if use_cuda:
        device = torch.device("cuda")
    elif use_mps:
        device = torch.device("mps")
    else:
        device = torch.device("cpu")

    train_kwargs = {{'batch_size': args.batch_size}}
    test_kwargs = {{'batch_size': args.test_batch_size}}
    if use_cuda:
        cuda_kwargs = {{'num_workers': 1,
                       'pin_memory': True,
                       'shuffle': True}}
        train_kwargs.update(cuda_kwargs)
        test_kwargs.update(cuda_kwargs)

    transform=transforms.Compose([
        transforms.ToTensor(),
        transforms.Normalize((0.1307,), (0.3081,))
        ])
    dataset1 = datasets.MNIST('../data', train=True, download=True,
                       transform=transform)
    dataset2 = datasets.MNIST('../data', train=False,
                       transform=transform)
    train_loader = torch.utils.data.DataLoader(dataset1,**train_kwargs)
    test_loader = torch.utils.data.DataLoader(dataset2, **test_kwargs)

    model = Net().to(device)
    optimizer = optim.Adadelta(model.parameters(), lr=args.lr)
{make_step}
    scheduler = StepLR(optimizer, step_size=1, gamma=args.gamma)
    for epoch in range(1, args.epochs + 1):
        train(args, model, device, train_loader, optimizer, epoch{step_arg})
        test(model, device, test_loader)
        scheduler.step()

    if args.save_model:
        torch.save(model.state_dict(), "mnist_cnn.pt")


if __name__ == '__main__':
    main()
"""

# The example's own training loop.
EAGER_TRAIN = """\
def train(args, model, device, train_loader, optimizer, epoch):
    model.train()
    for batch_idx, (data, target) in enumerate(train_loader):
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        if batch_idx % args.log_interval == 0:
            print('Train Epoch: {} [{}/{} ({:.0f}%)]\\tLoss: {:.6f}'.format(
                epoch, batch_idx * len(data), len(train_loader.dataset),
                100. * batch_idx / len(train_loader), loss.item()))
            if args.dry_run:
                break
"""

# The same loop with its step as one compiled function, as PyTorch 2 users write it.
COMPILED_TRAIN = """\
def train(args, model, device, train_loader, optimizer, epoch, train_step):
    model.train()
    for batch_idx, (data, target) in enumerate(train_loader):
        data, target = data.to(device), target.to(device)
        loss = train_step(data, target)
        if batch_idx % args.log_interval == 0:
            print('Train Epoch: {} [{}/{} ({:.0f}%)]\\tLoss: {:.6f}'.format(
                epoch, batch_idx * len(data), len(train_loader.dataset),
                100. * batch_idx / len(train_loader), loss.item()))
            if args.dry_run:
                break
"""
MAKE_STEP = """
    @torch.compile
    def train_step(data, target):
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        return loss
"""


def script(compiled: bool) -> str:
    return EXAMPLE.format(
        imports=IMPORTS,
        train=COMPILED_TRAIN if compiled else EAGER_TRAIN,
        make_step=MAKE_STEP if compiled else "",
        step_arg=", train_step" if compiled else "",
    )


def idx(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    return header + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_mnist(root: Path, n_train: int, n_test: int) -> None:
    """MNIST-shaped files: each digit class is a bright square at its own place on a dark,
    noisy background, so a few steps of training already separate the classes."""
    rng = np.random.default_rng(0)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(labels):
            r, col = 2 + 8 * (c // 4), 2 + 8 * (c % 4)
            images[i, r : r + 6, col : col + 6] = 250
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(idx(images))
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(idx(labels))


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_the_mnist_example_runs_with_its_imports_changed(tmp_path, compiled):
    write_mnist(tmp_path / "data", n_train=320, n_test=200)
    work = tmp_path / "example"
    work.mkdir()
    text = script(compiled)
    assert text.count("graphc") == IMPORTS.count("graphc")  # the import lines, nothing else
    (work / "main.py").write_text(text)
    args = ["--epochs", "2", "--batch-size", "32", "--test-batch-size", "100"]
    args += ["--log-interval", "5", "--save-model"]
    run = subprocess.run(
        [sys.executable, "main.py", *args], cwd=work, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert out.count("Train Epoch: 1 [") == 2 and out.count("Train Epoch: 2 [") == 2
    tests = re.findall(r"Test set: Average loss: ([\d.]+), Accuracy: (\d+)/200", out)
    assert len(tests) == 2, out
    (_, _), (last_loss, correct) = tests
    assert float(last_loss) < 1.0 and int(correct) > 150  # it learned the ten squares
    assert (work / "mnist_cnn.pt").stat().st_size > 4 * 1_199_882  # every parameter saved
