// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {IConcord} from "./interfaces/IConcord.sol";
import {Pipeline} from "./Pipeline.sol";

/// @title Balances
/// @notice The protocol's token vault: every token Concord holds is a stake, a task escrow or
///         a credited balance, and tokens leave only through `withdraw` (pull payments).
/// @dev Keeps the three liability totals (in ConcordStorage) so `totalLiabilities()` is O(1);
///      every function that moves an amount between the buckets updates them in the same
///      call, which is what the conservation invariant test checks against the token balance.
abstract contract Balances is IConcord, ReentrancyGuardTransient, Pipeline {
    using SafeERC20 for IERC20;

    // ---------------------------------------------------------------------------------------
    // External
    // ---------------------------------------------------------------------------------------

    /// @inheritdoc IConcord
    function withdraw(uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        Account storage acct = _accounts[msg.sender];
        uint256 balance = acct.amount;
        if (amount > balance) revert InsufficientBalance(msg.sender, balance, amount);
        unchecked {
            acct.amount = uint128(balance - amount);
            _creditedTotal -= uint128(amount); // amount <= balance <= _creditedTotal
        }
        emit Withdrawn(msg.sender, amount);
        _token.safeTransfer(msg.sender, amount);
    }

    // ---------------------------------------------------------------------------------------
    // Views
    // ---------------------------------------------------------------------------------------

    /// @inheritdoc IConcord
    function token() external view returns (address) {
        return address(_token);
    }

    /// @inheritdoc IConcord
    function balanceOf(address account) external view returns (uint256) {
        return _accounts[account].amount;
    }

    /// @inheritdoc IConcord
    function totals() external view returns (uint256 escrow, uint256 staked, uint256 credited) {
        return (_escrowTotal, _stakedTotal, _creditedTotal);
    }

    /// @inheritdoc IConcord
    function totalLiabilities() external view returns (uint256) {
        return uint256(_escrowTotal) + _stakedTotal + _creditedTotal;
    }
}
