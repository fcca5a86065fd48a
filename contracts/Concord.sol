// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {ConcordStorage} from "./ConcordStorage.sol";
import {ConcordSettlement} from "./ConcordSettlement.sol";
import {Balances} from "./Balances.sol";
import {NodeRegistry} from "./NodeRegistry.sol";
import {TaskBook} from "./TaskBook.sol";
import {Rounds} from "./Rounds.sol";

/// @title Concord
/// @notice The deployed protocol contract: node registry, task book, round pipeline and pull
///         payments over one ERC-20. It has no owner and no admin function: stakes and escrow
///         move only by the rules in `Rounds`, `ConcordSettlement` and `NodeRegistry`.
/// @dev One contract holds every token, so the conservation invariant is
///      `token.balanceOf(this) == totalLiabilities()`. The four modules sit side by side on the
///      one storage layout (`ConcordStorage`) and the round clock (`Pipeline`), none above
///      another. The constructor deploys its own `ConcordSettlement` module (task creation,
///      join/leave, finalize), which it delegatecalls; the module's address is immutable, so
///      no one can swap the code.
contract Concord is Balances, NodeRegistry, TaskBook, Rounds {
    // ---------------------------------------------------------------------------------------
    // Storage
    // ---------------------------------------------------------------------------------------

    /// @dev The settlement module, deployed by the constructor and fixed for life.
    address internal immutable _settlement;

    // ---------------------------------------------------------------------------------------
    // Constructor
    // ---------------------------------------------------------------------------------------

    /// @param token_ The protocol ERC-20 (stakes, escrow, rewards). Must be a plain token.
    /// @param unbondDelay_ Seconds between requestUnbond and completeUnbond.
    constructor(IERC20 token_, uint256 unbondDelay_) ConcordStorage(token_) NodeRegistry(unbondDelay_) {
        _settlement = address(new ConcordSettlement(token_));
    }

    // ---------------------------------------------------------------------------------------
    // Internal
    // ---------------------------------------------------------------------------------------

    /// @dev Run the current call's function (same selector and arguments) in the settlement
    ///      module on this contract's storage; bubble up its revert data unchanged (custom
    ///      errors arrive as if raised here).
    function _delegate() internal override(TaskBook, Rounds) returns (bytes memory ret) {
        bool ok;
        (ok, ret) = _settlement.delegatecall(msg.data);
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(ret, 0x20), mload(ret))
            }
        }
    }
}
