"""A seed-style MNIST classifier with several of the seed's mistakes left in."""
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from torch.utils.data import DataLoader
import torchvision.datasets as datasets
from torchvision import transforms


class Net(nn.Module):
    def __init__(self, input_size, num_classes):
        super().__init__()
        self.fc1 = nn.Linear(input_size, 50)
        self.fc2 = nn.Linear(50, num_classes)

    def forward(self, x):
        x = F.relu(self.fc1(x))
        return F.softmax(self.fc2(x), dim=1)


device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
train_data = datasets.MNIST(root="data", train=True, transform=transforms.ToTensor(), download=False)
test_data = datasets.MNIST(root="data", train=False, transform=transforms.ToTensor())
train_loader = DataLoader(dataset=train_data, batch_size=64)
test_loader = DataLoader(dataset=test_data, batch_size=64)

model = Net(784, 10).to(device)
criterion = nn.CrossEntropyLoss()
optimizer = optim.Adam(model.parameters(), lr=1e-3)


def check_accuracy(loader, model):
    correct = 0
    total = 0
    model.eval()
    with torch.no_grad():
        for x, y in loader:
            x = x.to(device).reshape(x.shape[0], -1)
            scores = model(x)
            correct += (scores.argmax(1) == y.to(device)).sum().item()
            total += y.size(0)
    return correct / total


for epoch in range(3):
    for data, targets in train_loader:
        data = data.to(device).reshape(data.shape[0], -1)
        targets = targets.to(device)
        scores = model(data)
        loss = criterion(scores, targets)
        loss.backward()
        optimizer.step()
    print(check_accuracy(test_loader, model))

torch.load("checkpoint.pth")
