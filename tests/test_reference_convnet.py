"""The reference ConvNet code of DESIGN §1, unchanged except for imports, eager and compiled."""

import numpy as np

import graphc
import graphc.nn as nn
import graphc.nn.functional as F
import graphc.optim as optim
from graphc.data import DataLoader, TensorDataset


class ConvNet(nn.Module):  # the reference model: LeNet-style, CIFAR-10 shaped
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = x.view(-1, 16 * 5 * 5)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def make_loader(n=96, batch_size=32):
    rng = np.random.default_rng(1)
    images = graphc.from_numpy(rng.standard_normal((n, 3, 32, 32)).astype(np.float32))
    labels = graphc.from_numpy(rng.integers(0, 10, n))
    return DataLoader(TensorDataset(images, labels), batch_size=batch_size, shuffle=False)


def run(compiled: bool, epochs: int = 2) -> tuple[list[float], dict]:
    graphc.manual_seed(0)
    trainloader = make_loader()
    net = ConvNet()
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(net.parameters(), lr=0.001, momentum=0.9)

    def train_step(inputs, labels):
        optimizer.zero_grad()
        loss = criterion(net(inputs), labels)
        loss.backward()
        optimizer.step()
        return loss

    if compiled:
        train_step = graphc.compile(train_step)
    losses = []
    for epoch in range(epochs):  # noqa: B007  (the DESIGN loop, verbatim)
        for inputs, labels in trainloader:
            loss = train_step(inputs, labels)  # loss.item() -> float
            losses.append(loss.item())
    return losses, {k: v.numpy().copy() for k, v in net.state_dict().items()}


def test_reference_convnet_eager_and_compiled_agree():
    eager_losses, eager_state = run(compiled=False)
    compiled_losses, compiled_state = run(compiled=True)
    assert len(eager_losses) == 6
    np.testing.assert_allclose(compiled_losses, eager_losses, rtol=1e-5)
    for k, v in eager_state.items():
        np.testing.assert_allclose(compiled_state[k], v, rtol=1e-5, atol=1e-7, err_msg=k)
    # Training moves the parameters and lowers the loss on this fixed data.
    assert eager_losses[-1] < eager_losses[0]
