"""A DCGAN-style loop with two optimizers: the loop is correct; the Sigmoid + BCELoss pair is TRN204."""
import torch
import torch.nn as nn
import torch.optim as optim

nz = 100


class Generator(nn.Module):
    def __init__(self):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, 64, 4, 1, 0, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(True),
            nn.ConvTranspose2d(64, 1, 4, 2, 1, bias=False),
            nn.Tanh(),
        )

    def forward(self, x):
        return self.main(x)


class Discriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(1, 64, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(64, 128, 4, 2, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(128, 1, 4, 1, 0, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x):
        return self.main(x).view(-1)


def train(dataloader, epochs, device):
    netG = Generator().to(device)
    netD = Discriminator().to(device)
    criterion = nn.BCELoss()
    optimizerD = optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optimizerG = optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    for epoch in range(epochs):
        for real, _ in dataloader:
            real = real.to(device)
            b = real.size(0)
            netD.zero_grad()
            output = netD(real)
            errD_real = criterion(output, torch.ones(b, device=device))
            errD_real.backward()
            noise = torch.randn(b, nz, 1, 1, device=device)
            fake = netG(noise)
            output = netD(fake.detach())
            errD_fake = criterion(output, torch.zeros(b, device=device))
            errD_fake.backward()
            optimizerD.step()

            netG.zero_grad()
            output = netD(fake)
            errG = criterion(output, torch.ones(b, device=device))
            errG.backward()
            optimizerG.step()
