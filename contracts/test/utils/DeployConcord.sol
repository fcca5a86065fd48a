// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {Concord} from "../../Concord.sol";
import {ConcordSeed} from "../../ConcordSeed.sol";
import {ConcordSettlement} from "../../ConcordSettlement.sol";

/// @notice Deploy Concord as `concord deploy` does: its two modules first, then Concord naming them.
function deployConcord(IERC20 token, uint256 unbondDelay) returns (Concord) {
    return new Concord(token, unbondDelay, new ConcordSettlement(token), new ConcordSeed(token));
}
