// The data layer in one include: datasets and their readers, transforms and the DataLoader.
// Include narrower headers where compile time matters.
#pragma once
#include "data/cifar.h"
#include "data/dataset.h"
#include "data/idx.h"
#include "data/io.h"
#include "data/loader.h"
#include "data/transforms.h"
